/* Undo PNG's per-row filters (PNG spec, section 9: None, Sub, Up, Average, Paeth) for 8- and 16-bit grayscale.
 *
 * Why this exists: decoding label PNGs is most of what an evaluation costs, and every PNG library measured on
 * the development machine (libpng, libspng, Wuffs, OpenCV, PIL) spends 2.5-8 ns per byte on the Sub, Average
 * and Paeth rows, because each byte waits for the byte it just stored. Keeping the left neighbour in a
 * register instead takes ~1 ns per byte. zlib-ng (through imagecodecs) inflates the image data; this module
 * only turns the inflated rows into pixels. cityseg.data.pngdecode validates the file first and falls back to
 * libpng or PIL when this module is not built or refuses the data.
 *
 * Safety: the only inputs are two buffers whose sizes are checked against each other before any byte is read,
 * a row length and the bytes per pixel; nothing is allocated; an unknown filter type is an error.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define ALWAYS_INLINE static __forceinline
#define restrict __restrict /* older MSVC C compilers know only the underscored spelling */
#else
#define ALWAYS_INLINE static inline
#endif

enum { FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH };

/* The Paeth predictor: whichever of left (a), above (b), upper-left (c) is closest to a + b - c, ties in that order. */
static inline int paeth_predictor(int a, int b, int c)
{
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    if (pa <= pb && pa <= pc)
        return a;
    return pb <= pc ? b : c;
}

static void row_up(uint8_t *restrict out, const uint8_t *restrict in, const uint8_t *restrict above, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = (uint8_t)(in[i] + above[i]);
}

/* The three filters that use the left neighbour keep it in a register (one per byte of a pixel: `step`, a
 * constant 1 or 2 after inlining, so the chains of a 16-bit pixel's two bytes run side by side) instead of
 * reading back the byte just stored; `above` is NULL on the first row. */
ALWAYS_INLINE void
row_sub(uint8_t *restrict out, const uint8_t *restrict in, Py_ssize_t n, const int step)
{
    uint8_t left[2] = {0, 0};
    for (Py_ssize_t i = 0; i < n; i += step)
        for (int k = 0; k < step; k++)
            out[i + k] = left[k] = (uint8_t)(in[i + k] + left[k]);
}

ALWAYS_INLINE void
row_average(uint8_t *restrict out, const uint8_t *restrict in, const uint8_t *restrict above, Py_ssize_t n,
            const int step)
{
    int left[2] = {0, 0};
    for (Py_ssize_t i = 0; i < n; i += step)
        for (int k = 0; k < step; k++)
            out[i + k] = (uint8_t)(left[k] = (uint8_t)(in[i + k] + ((left[k] + (above ? above[i + k] : 0)) >> 1)));
}

ALWAYS_INLINE void
row_paeth(uint8_t *restrict out, const uint8_t *restrict in, const uint8_t *restrict above, Py_ssize_t n,
          const int step)
{
    int left[2] = {0, 0}, upper_left[2] = {0, 0};
    for (Py_ssize_t i = 0; i < n; i += step)
        for (int k = 0; k < step; k++) {
            int up = above ? above[i + k] : 0;
            /* where the row above is flat (up == upper_left) the predictor is the left byte: label maps are
               mostly flat, so this branch is almost always taken and rarely mispredicted */
            int predicted = up == upper_left[k] ? left[k] : paeth_predictor(left[k], up, upper_left[k]);
            out[i + k] = (uint8_t)(left[k] = (uint8_t)(in[i + k] + predicted));
            upper_left[k] = up;
        }
}

/* PNG stores 16-bit samples big-endian; written so that compilers turn it into vector byte shuffles. */
static void swap_bytes_16(uint8_t *data, Py_ssize_t n)
{
    Py_ssize_t samples = n / 2;
    for (Py_ssize_t j = 0; j < samples; j++) {
        uint16_t sample;
        memcpy(&sample, data + 2 * j, 2);
        sample = (uint16_t)((sample << 8) | (sample >> 8));
        memcpy(data + 2 * j, &sample, 2);
    }
}

/* Unfilter every row; returns the index of the first row with an unknown filter type, or -1. With swap16,
 * each row is swapped once the next one no longer needs its stored order (while it is still in cache). */
static Py_ssize_t unfilter_rows(const uint8_t *in, uint8_t *out, Py_ssize_t height, Py_ssize_t row_bytes,
                                Py_ssize_t pixel_bytes, int swap16)
{
    for (Py_ssize_t y = 0; y < height; y++) {
        const uint8_t filter = in[0], *row_in = in + 1, *above = y ? out - row_bytes : NULL;
        switch (filter) {
        case FILTER_NONE:
            memcpy(out, row_in, (size_t)row_bytes);
            break;
        case FILTER_UP:
            if (above)
                row_up(out, row_in, above, row_bytes);
            else
                memcpy(out, row_in, (size_t)row_bytes);
            break;
        case FILTER_SUB:
            if (pixel_bytes == 1)
                row_sub(out, row_in, row_bytes, 1);
            else
                row_sub(out, row_in, row_bytes, 2);
            break;
        case FILTER_AVERAGE:
            if (pixel_bytes == 1)
                row_average(out, row_in, above, row_bytes, 1);
            else
                row_average(out, row_in, above, row_bytes, 2);
            break;
        case FILTER_PAETH:
            if (pixel_bytes == 1)
                row_paeth(out, row_in, above, row_bytes, 1);
            else
                row_paeth(out, row_in, above, row_bytes, 2);
            break;
        default:
            return y;
        }
        if (swap16 && above)
            swap_bytes_16(out - row_bytes, row_bytes);
        in += row_bytes + 1;
        out += row_bytes;
    }
    if (swap16)
        swap_bytes_16(out - row_bytes, row_bytes);
    return -1;
}

PyDoc_STRVAR(unfilter_doc,
"unfilter(filtered, out, row_bytes, pixel_bytes, swap16)\n--\n\n"
"Write the pixels of inflated PNG image data into `out` (a writable buffer of H * row_bytes bytes).\n"
"`filtered` holds H rows of one filter-type byte plus row_bytes bytes; pixel_bytes is 1 or 2; swap16\n"
"swaps each byte pair afterwards (PNG stores 16-bit samples big-endian). ValueError on mismatched sizes\n"
"or an unknown filter type. Releases the GIL.");

static PyObject *unfilter(PyObject *module, PyObject *args)
{
    Py_buffer filtered, out;
    Py_ssize_t row_bytes, pixel_bytes;
    int swap16;
    if (!PyArg_ParseTuple(args, "y*w*nnp:unfilter", &filtered, &out, &row_bytes, &pixel_bytes, &swap16))
        return NULL;
    Py_ssize_t bad_row = -1, height = row_bytes > 0 ? out.len / row_bytes : 0;
    int sizes_match = (pixel_bytes == 1 || pixel_bytes == 2) && row_bytes > 0 && row_bytes % pixel_bytes == 0
                      && out.len == height * row_bytes && height > 0 && filtered.len / (row_bytes + 1) == height
                      && filtered.len % (row_bytes + 1) == 0 && PyBuffer_IsContiguous(&out, 'C');
    if (sizes_match) {
        Py_BEGIN_ALLOW_THREADS
        bad_row = unfilter_rows(filtered.buf, out.buf, height, row_bytes, pixel_bytes, swap16 && pixel_bytes == 2);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&filtered);
    PyBuffer_Release(&out);
    if (!sizes_match) {
        PyErr_SetString(PyExc_ValueError, "unfilter: the buffer sizes do not fit the row length and pixel size");
        return NULL;
    }
    if (bad_row >= 0) {
        PyErr_Format(PyExc_ValueError, "unfilter: row %zd has an unknown filter type", bad_row);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"unfilter", unfilter, METH_VARARGS, unfilter_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_pngrows", "PNG row unfiltering for cityseg.data.pngdecode.", -1, methods,
};

PyMODINIT_FUNC PyInit__pngrows(void)
{
    return PyModule_Create(&module_def);
}
