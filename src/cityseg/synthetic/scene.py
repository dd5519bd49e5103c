"""A scene: Cityscapes polygons in drawing order (far to near, so later objects occlude earlier ones, as in the
official rasteriser), each with decals (lane marks, windows, tyres, ...) that only the photo shows and that are
occluded exactly like their owner's label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from PIL import Image, ImageDraw

from cityseg.synthetic.geometry import Camera, Polygon, clip_polygon


class Decal(IntEnum):
    """Surface detail painted over part of an object (value 0 = none)."""

    LANE = 1
    GLASS = 2
    TYRE = 3
    TAIL_LIGHT = 4
    LAMP_OFF = 5
    LAMP_RED = 6
    LAMP_AMBER = 7
    LAMP_GREEN = 8
    SIGN_FACE = 9
    SKIN = 10
    TROUSERS = 11


DecalList = list[tuple[Decal, Polygon]]


@dataclass
class SceneObject:
    label: str  # Cityscapes label name
    polygon: Polygon  # pixels, unclipped
    decals: DecalList = field(default_factory=list)


@dataclass
class Scene:
    """What the JSON holds (labels and polygons) plus what only the renderer needs."""

    camera: Camera
    objects: list[SceneObject] = field(default_factory=list)

    def add(self, label: str, polygon: Polygon, decals: DecalList | None = None) -> None:
        self.objects.append(SceneObject(label, polygon, decals or []))


def scene_objects(scene: Scene) -> list[dict]:
    """Clipped JSON objects ({"label", "polygon"}) in drawing order."""
    cam = scene.camera
    objects = []
    for obj in scene.objects:
        clipped = clip_polygon(obj.polygon, cam.width, cam.height)
        if clipped is not None:
            objects.append({"label": obj.label, "polygon": clipped})
    return objects


def decal_mask(scene: Scene) -> np.ndarray:
    """(H, W) uint8 Decal values, occluded like the labels: each object first clears its own area."""
    cam = scene.camera
    image = Image.new("L", (cam.width, cam.height), 0)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        clipped = clip_polygon(obj.polygon, cam.width, cam.height)
        if clipped is None:
            continue
        draw.polygon([tuple(p) for p in clipped], fill=0)
        for kind, polygon in obj.decals:
            part = clip_polygon(polygon, cam.width, cam.height)
            if part is not None:
                draw.polygon([tuple(p) for p in part], fill=int(kind))
    return np.asarray(image)
