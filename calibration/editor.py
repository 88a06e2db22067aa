"""Interactive drawing of lines, zones and masks in an OpenCV window.

Keys: `l` line mode, `z` zone mode, `m` mask mode, left click adds a point,
Enter commits the current item (a name is asked for on the terminal), `u`
undoes the last point or the last committed item, `s` saves and closes, `q`
or Esc closes without saving. Lines are drawn with their direction arrow;
the `in` side is to the right of the arrow, as in `calibration.preview`.

The window needs an OpenCV build with a GUI backend and a display;
opencv-python-headless has none, so on a headless node use the
`--line/--zone/--mask` options instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.draw import DrawError, DrawnItem, ItemKind, check_item
from calibration.errors import CalibrationError
from edge.analytics import ReferenceFrame
from edge.types import Image

logger = logging.getLogger(__name__)

WINDOW = "sitlab-calibrate draw"
_KEY_ENTER = (10, 13)
_KEY_ESCAPE = 27
_MODE_KEYS = {ord("l"): ItemKind.LINE, ord("z"): ItemKind.ZONE, ord("m"): ItemKind.MASK}
_COLOURS = {
    ItemKind.LINE: (0, 159, 230),
    ItemKind.ZONE: (115, 158, 0),
    ItemKind.MASK: (160, 160, 160),
}


class EditorUnavailableError(CalibrationError):
    """No window can be opened here."""


@dataclass(slots=True)
class EditorState:
    """What has been drawn so far; independent of any window, so it can be tested.

    Attributes:
        resolution_wh: size of the snapshot.
        mode: the kind of item the clicks build.
        points: points of the item being drawn.
        items: committed items.
        message: last status or error, shown in the window.
    """

    resolution_wh: tuple[int, int]
    mode: ItemKind = ItemKind.LINE
    points: list[tuple[float, float]] = field(default_factory=list)
    items: list[DrawnItem] = field(default_factory=list)
    message: str = "l line, z zone, m mask, click points, Enter commit, u undo, s save"

    def set_mode(self, mode: ItemKind) -> None:
        """Switch the kind of item; discards unfinished points."""
        self.mode = mode
        self.points.clear()
        self.message = f"{mode.value} mode"

    def click(self, x: float, y: float) -> None:
        """Add a point; a line takes two, so a third click starts over."""
        if self.mode is ItemKind.LINE and len(self.points) == 2:
            self.points.clear()
        self.points.append((float(x), float(y)))

    def undo(self) -> None:
        """Remove the last point, or the last committed item when none is open."""
        if self.points:
            self.points.pop()
        elif self.items:
            removed = self.items.pop()
            self.message = f"removed {removed.kind.value} {removed.name!r}"

    def commit(self, name: str) -> bool:
        """Turn the open points into an item named `name`; False when invalid."""
        item = DrawnItem(self.mode, name.strip(), tuple(self.points))
        if len(item.points) < item.kind.min_points:
            self.message = (
                f"a {item.kind.value} needs at least {item.kind.min_points} points"
            )
            return False
        if any(old.kind is item.kind and old.name == item.name for old in self.items):
            self.message = (
                f"{item.kind.value} {item.name!r} exists; choose another name"
            )
            return False
        try:
            check_item(item, ReferenceFrame.pixels(self.resolution_wh))
        except DrawError as error:
            self.message = str(error)
            return False
        self.items.append(item)
        self.points.clear()
        self.message = f"added {item.kind.value} {item.name!r}"
        return True


def render(image: Image, state: EditorState) -> Image:
    """Draw the committed items, the open points and the status line."""
    canvas = image.copy()
    for item in state.items:
        _draw_item(canvas, item.kind, item.points, closed=True)
    _draw_item(canvas, state.mode, tuple(state.points), closed=False)
    cv2.rectangle(canvas, (0, 0), (canvas.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(
        canvas,
        state.message[:120],
        (4, 16),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return canvas


def _draw_item(
    canvas: Image,
    kind: ItemKind,
    points: Sequence[tuple[float, float]],
    *,
    closed: bool,
) -> None:
    colour = _COLOURS[kind]
    pixels = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
    for x, y in pixels:
        cv2.circle(canvas, (int(x), int(y)), 4, colour, -1, cv2.LINE_AA)
    if len(pixels) < 2:
        return
    if kind is ItemKind.LINE:
        start, end = (tuple(int(v) for v in p) for p in pixels[:2])
        cv2.arrowedLine(canvas, start, end, colour, 2, cv2.LINE_AA, tipLength=0.05)
        return
    cv2.polylines(canvas, [pixels], closed, colour, 2, cv2.LINE_AA)


def run_editor(
    image: Image,
    initial: Sequence[DrawnItem] = (),
    ask_name: Callable[[str], str] = input,
) -> list[DrawnItem]:
    """Open the window and return all items (`initial` included) when saved.

    Raises:
        EditorUnavailableError: when OpenCV has no GUI backend or no display.
        CalibrationError: when the window is closed without saving.
    """
    height, width = image.shape[:2]
    state = EditorState(resolution_wh=(width, height))
    state.items.extend(initial)
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as error:
        raise EditorUnavailableError(
            "cannot open a window: this OpenCV has no GUI backend or there is no "
            f"display ({error.msg.strip()}); use --line, --zone and --mask, or "
            "install opencv-python instead of opencv-python-headless on a desktop"
        ) from None

    def on_mouse(event: int, x: int, y: int, _flags: int, _param: object) -> None:
        if event == cv2.EVENT_LBUTTONDOWN:
            state.click(x, y)

    cv2.setMouseCallback(WINDOW, on_mouse)
    try:
        return _loop(image, state, ask_name)
    finally:
        cv2.destroyWindow(WINDOW)


def _loop(
    image: Image, state: EditorState, ask_name: Callable[[str], str]
) -> list[DrawnItem]:
    while True:
        cv2.imshow(WINDOW, render(image, state))
        key = cv2.waitKey(30) & 0xFF
        if key in _MODE_KEYS:
            state.set_mode(_MODE_KEYS[key])
        elif key in _KEY_ENTER:
            state.commit(ask_name(f"name of the new {state.mode.value}: "))
        elif key == ord("u"):
            state.undo()
        elif key == ord("s"):
            return list(state.items)
        elif key in (ord("q"), _KEY_ESCAPE):
            raise CalibrationError(
                "the editor was closed without saving; nothing changed"
            )
