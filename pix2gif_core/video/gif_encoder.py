"""Fast animated-GIF encoder: one 256-colour palette per clip, our own pixel mapping, Pillow only writes LZW.

Pipeline (all numpy on the CPU; the frames leave the GPU once, as uint8):

1. Palette (:func:`clip_palette`): a 64-level-per-channel colour histogram of a strided pixel sample of the
   whole clip (about 0.6 M pixels, whatever the clip length) -> greedy variance split of the histogram cells
   into 256 boxes (each cut placed where it minimises the summed squared error) -> a few weighted k-means
   (Lloyd) iterations on the cells. Colours are weighted by how often they occur, so the palette minimises
   the clip's mean squared error -- which is what PSNR measures.
2. Mapping (:func:`map_to_palette`): a nearest-colour lookup table over a 128x128x128 RGB grid, filled only
   for the grid cells the clip actually uses, then one table gather per pixel. A pixel's colour is at most
   sqrt(3) (8-bit units) farther from its pick than from the exact nearest palette colour.
3. Pillow writes the index frames (mode "P", same palette on every frame): it only LZW-compresses and crops each
   frame to the rectangle that changed since the previous one.

One palette for the whole clip keeps colours from flickering between frames. Dithering is optional:
``"none"`` (default: highest PSNR, smallest file, least flicker), ``"ordered"`` (8x8 Bayer; fixed to the
screen so it does not crawl on static areas; amplitude = the palette's median nearest-neighbour spacing) and
``"floyd-steinberg"`` (Pillow's C error diffusion against our palette; most flicker, largest file).

Timing: GIF delays are whole centiseconds. Frame k is shown from round(k * 100 / fps) cs on, so single
delays differ by up to 10 ms from 1000 / fps but the rounding never accumulates (8 fps -> 130, 120, 130, ...
ms; the whole clip lasts N * 1000 / fps ms to within 5 ms). Browsers replace delays under 20 ms by 100 ms,
so delays are at least 20 ms: above 50 fps a GIF plays at 50 fps.

Pillow merges consecutive frames whose indices are identical (static content) into one frame with the summed
delay: the clip plays the same, but the decoded file can hold fewer frames than were given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Literal, TypeVar, get_args

import numpy as np
import torch
from PIL import Image

from ..errors import Pix2GifInputError

GifDither = Literal["none", "ordered", "floyd-steinberg"]
#: called between frames of long work; raises (e.g. the host's cancel) to stop it
CancelCheck = Callable[[], None]
Frame = TypeVar("Frame")

GIF_TICK_MS = 10
GIF_MIN_DELAY_MS = 20
PALETTE_SIZE = 256
_HIST_BITS = 6  # histogram cells: 64 levels per channel
_INIT_BITS = 5  # the variance split runs on a coarser 32-level histogram (fewer points, same quality after k-means)
_LUT_BITS = 7  # lookup table: 128 levels per channel
_KMEANS_ITERATIONS = 4
_SAMPLE_PIXELS = 600_000
_NEAREST_CHUNK = 1024


# ----------------------------------------------------------------------------------------------------------------
# Input, order and timing (shared with animation_writer)


def as_uint8_frames(frames: torch.Tensor | np.ndarray, name: str = "frames") -> np.ndarray:
    """ComfyUI IMAGE batch -> C-contiguous uint8 array (N, H, W, 3) on the CPU.

    Accepts a float tensor/array (N, H, W, 3) in [0, 1] (values outside are clipped; rounded to the nearest
    8-bit level; a CUDA tensor is converted on its device and copied once as uint8) or a uint8 tensor/array.
    """
    if not isinstance(frames, (torch.Tensor, np.ndarray)):
        raise Pix2GifInputError(f"{name}: expected an IMAGE tensor (N, H, W, 3), got {type(frames).__name__}.")
    if frames.ndim != 4:
        raise Pix2GifInputError(
            f"{name}: expected a batch of images shaped (N, H, W, 3), got shape {tuple(frames.shape)}."
        )
    count, height, width, channels = frames.shape
    if count == 0:
        raise Pix2GifInputError(f"{name}: the image batch is empty; connect at least one frame.")
    if height == 0 or width == 0:
        raise Pix2GifInputError(f"{name}: frames have zero size ({height}x{width}).")
    if channels != 3:
        raise Pix2GifInputError(
            f"{name}: expected 3 colour channels (RGB), got {channels}; drop alpha with image[..., :3] "
            "or convert grey images to RGB first."
        )
    is_float = frames.dtype.kind == "f" if isinstance(frames, np.ndarray) else frames.dtype.is_floating_point
    if not is_float and frames.dtype not in (np.uint8, torch.uint8):
        raise Pix2GifInputError(f"{name}: expected float values in [0, 1] or uint8, got dtype {frames.dtype}.")
    if not is_float:
        return np.ascontiguousarray(frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames)
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.array(frames, dtype=np.float32))
    low, high = torch.aminmax(frames)  # NaN propagates into both; one pass, no per-element mask
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise Pix2GifInputError(f"{name}: contains NaN or infinite values; check the upstream decode.")
    levels = torch.empty(frames.shape, dtype=torch.uint8)
    for i, frame in enumerate(frames):  # frame by frame: the float temporaries stay in cache
        levels[i].copy_(frame.float().mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8))
    return levels.numpy()


def pingpong_order(count: int) -> list[int]:
    """Frame order forwards then backwards without repeating either end frame: 6 -> [0..5, 4, 3, 2, 1] (10)."""
    return list(range(count)) + list(range(count - 2, 0, -1))


def check_fps(fps: float) -> float:
    """Return ``fps`` as float, or raise Pix2GifInputError unless it is a finite number > 0."""
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise Pix2GifInputError(f"fps: must be a finite number > 0 (frames per second), got {fps!r}.")
    return float(fps)


def check_loop(loop: int) -> int:
    """Return ``loop`` (how many times the animation plays; 0 = forever) or raise Pix2GifInputError."""
    if not isinstance(loop, int) or isinstance(loop, bool) or not 0 <= loop <= 65535:
        raise Pix2GifInputError(f"loop: must be an integer 0..65535 (0 = forever, n = play n times), got {loop!r}.")
    return loop


def frame_durations_ms(count: int, fps: float, tick_ms: int = 1, min_ms: int = 0) -> list[int]:
    """Per-frame display times in ms, multiples of ``tick_ms``, whose running sum tracks k * 1000 / fps.

    Frame k starts at round(k * 1000 / fps / tick_ms) ticks, so the rounding error never accumulates; each
    duration is then raised to at least ``min_ms``.
    """
    ticks_per_frame = 1000.0 / (check_fps(fps) * tick_ms)
    starts = [math.floor(k * ticks_per_frame + 0.5) for k in range(count + 1)]
    return [max((b - a) * tick_ms, min_ms) for a, b in zip(starts, starts[1:])]


# ----------------------------------------------------------------------------------------------------------------
# Palette


def _cell_histogram(pixels: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, 3) uint8 -> occupied cell keys (C,), mean colour per cell (C, 3) float64, pixel count (C,) float64."""
    levels = (pixels >> (8 - bits)).astype(np.int64)
    keys = (levels[:, 0] << (2 * bits)) | (levels[:, 1] << bits) | levels[:, 2]
    counts = np.bincount(keys, minlength=1 << (3 * bits))
    occupied = np.flatnonzero(counts)
    weights = counts[occupied].astype(np.float64)
    sums = np.stack(
        [np.bincount(keys, weights=pixels[:, c], minlength=counts.size)[occupied] for c in range(3)], axis=1
    )
    return occupied, sums / weights[:, None], weights


def _coarsen(keys: np.ndarray, means: np.ndarray, weights: np.ndarray, bits: int, coarse_bits: int):
    """Merge histogram cells into the cells of a coarser grid: -> (means (C', 3), weights (C',))."""
    shift = bits - coarse_bits
    mask = (1 << coarse_bits) - 1
    coarse = (
        (((keys >> (2 * bits + shift)) & mask) << (2 * coarse_bits))
        | (((keys >> (bits + shift)) & mask) << coarse_bits)
        | ((keys >> shift) & mask)
    )
    _, parent = np.unique(coarse, return_inverse=True)
    total = np.bincount(parent, weights=weights)
    sums = np.stack([np.bincount(parent, weights=weights * means[:, c]) for c in range(3)], axis=1)
    return sums / total[:, None], total


def _variance_split(points: np.ndarray, weights: np.ndarray, boxes: int) -> np.ndarray:
    """Greedy split of weighted points (n, 3) into ``boxes`` groups -> their weighted means (K, 3) float64.

    Repeatedly takes the group with the largest summed squared error (SSE), sorts it along its axis of largest
    SSE and cuts where the two halves' SSEs add up least; prefix sums give every cut's SSE in one pass.
    """

    def group(members: np.ndarray, w_sum: float, p_sum: np.ndarray, pp_sum: np.ndarray):
        """(members, sum w, sum w*p (3,), sum w*p^2 (3,), SSE per axis (3,))"""
        return members, float(w_sum), p_sum, pp_sum, np.maximum(pp_sum - p_sum**2 / w_sum, 0.0)

    groups = [group(np.arange(len(points)), weights.sum(), weights @ points, weights @ (points * points))]
    sse = [float(groups[0][4].sum())]
    while len(groups) < boxes:
        worst = int(np.argmax(sse))
        if sse[worst] <= 0.0:
            break  # every group holds a single colour
        members, w_total, p_total, pp_total, axis_sse = groups[worst]
        members = members[np.argsort(points[members, int(np.argmax(axis_sse))], kind="stable")]
        w, p = weights[members], points[members]
        cum_w = np.cumsum(w)[:-1]
        cum_p = np.cumsum(w[:, None] * p, axis=0)[:-1]
        cum_pp = np.cumsum(w[:, None] * p * p, axis=0)[:-1]
        rest_w, rest_p, rest_pp = w_total - cum_w, p_total - cum_p, pp_total - cum_pp
        split_sse = (cum_pp - cum_p**2 / cum_w[:, None] + rest_pp - rest_p**2 / rest_w[:, None]).sum(1)
        cut = int(np.argmin(split_sse))
        groups[worst] = group(members[: cut + 1], cum_w[cut], cum_p[cut], cum_pp[cut])
        groups.append(group(members[cut + 1 :], rest_w[cut], rest_p[cut], rest_pp[cut]))
        sse[worst] = float(groups[worst][4].sum())
        sse.append(float(groups[-1][4].sum()))
    return np.stack([p_sum / w_sum for _, w_sum, p_sum, _, _ in groups])


def _nearest(points: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each point: (n, 3) x (K, 3) float32 -> (n,) intp.

    Squared distances up to a per-point constant, |c|^2 - 2 p.c, in cache-sized chunks.
    """
    scaled = -2.0 * palette.T
    norms = (palette * palette).sum(1)
    out = np.empty(len(points), dtype=np.intp)
    for start in range(0, len(points), _NEAREST_CHUNK):
        dist = points[start : start + _NEAREST_CHUNK] @ scaled
        dist += norms
        out[start : start + _NEAREST_CHUNK] = dist.argmin(1)
    return out


def _kmeans(points: np.ndarray, weights: np.ndarray, centres: np.ndarray, iterations: int) -> np.ndarray:
    """Weighted Lloyd iterations; a centre that loses all its points keeps its position."""
    centres = centres.copy()
    points32 = points.astype(np.float32)
    for _ in range(iterations):
        assign = _nearest(points32, centres.astype(np.float32))
        mass = np.bincount(assign, weights=weights, minlength=len(centres))
        used = mass > 0
        for c in range(3):
            centres[used, c] = np.bincount(assign, weights=weights * points[:, c], minlength=len(centres))[used]
        centres[used] /= mass[used, None]
    return centres


def clip_palette(frames: np.ndarray, colours: int = PALETTE_SIZE) -> np.ndarray:
    """One palette for a whole clip: uint8 frames (N, H, W, 3) -> distinct colours (K, 3) uint8, K <= colours.

    A clip with at most ``colours`` distinct colours gets exactly those (lossless up to the lookup grid).
    """
    count, height, width, _ = frames.shape
    stride = max(1, math.ceil(math.sqrt(count * height * width / _SAMPLE_PIXELS)))
    sample = frames[:, ::stride, ::stride].reshape(-1, 3)
    keys, means, weights = _cell_histogram(sample, _HIST_BITS)
    if len(keys) <= colours:  # few colours (flat graphics, tests): maybe few enough to keep them all exactly
        distinct = np.unique(_packed_rgb(frames, 8))
        if len(distinct) <= colours:
            return _unpack_rgb(distinct, 8).astype(np.uint8)
    coarse_means, coarse_weights = _coarsen(keys, means, weights, _HIST_BITS, _INIT_BITS)
    centres = _variance_split(coarse_means, coarse_weights, colours)
    centres = _kmeans(means, weights, centres, _KMEANS_ITERATIONS)
    return np.unique(np.clip(np.rint(centres), 0, 255).astype(np.uint8), axis=0)


# ----------------------------------------------------------------------------------------------------------------
# Pixel mapping


def _bayer_matrix(size: int = 8) -> np.ndarray:
    """Ordered-dither thresholds (size, size) in (-0.5, 0.5), each value once."""
    matrix = np.zeros((1, 1), dtype=np.int64)
    while matrix.shape[0] < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return (matrix + 0.5) / matrix.size - 0.5


def _median_spacing(palette: np.ndarray) -> float:
    """Median distance from each palette colour to its nearest other colour (8-bit units)."""
    if len(palette) < 2:
        return 0.0
    p = palette.astype(np.float64)
    dist = ((p[:, None] - p[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return float(np.median(np.sqrt(dist.min(1))))


def _packed_rgb(rgb: np.ndarray, bits: int) -> np.ndarray:
    """C-contiguous uint8 (..., 3) -> (pixels,) intp words 0x00BBGGRR of each channel's top ``bits`` bits."""
    flat = rgb.reshape(-1)
    count = flat.size // 3
    words = np.empty(count, dtype=np.intp)
    # Every pixel's 3 bytes plus the next pixel's first byte, read in place as one little-endian word
    # (8x faster than copying to RGBX); the mask drops the 4th byte. The last pixel has no 4th byte.
    words[:-1] = np.ndarray((count - 1,), dtype="<u4", buffer=flat, strides=(3,))
    words[-1] = int.from_bytes(flat[-3:].tobytes(), "little")
    words >>= 8 - bits
    words &= (0xFF >> (8 - bits)) * 0x010101
    return words


def _unpack_rgb(words: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_packed_rgb`: (n,) words -> (n, 3) channel levels (0 .. 2**bits - 1), intp."""
    return np.stack([(words >> (8 * c)) & ((1 << bits) - 1) for c in range(3)], axis=1)


def each_frame(frames: Iterable[Frame], check_cancel: CancelCheck | None) -> Iterator[Frame]:
    """``frames`` one by one, calling ``check_cancel()`` (which raises to stop) before each."""
    for frame in frames:
        if check_cancel is not None:
            check_cancel()
        yield frame


def map_to_palette(frames: np.ndarray, palette: np.ndarray, dither: GifDither = "none",
                   check_cancel: CancelCheck | None = None) -> np.ndarray:
    """Palette indices (N, H, W) uint8 for uint8 frames (N, H, W, 3) and a palette (K, 3) uint8, K <= 256;
    ``check_cancel`` is called between frames."""
    if dither not in get_args(GifDither):
        raise Pix2GifInputError(f"dither: must be one of {get_args(GifDither)}, got {dither!r}.")
    count, height, width, _ = frames.shape
    if dither == "floyd-steinberg":
        return _floyd_steinberg(frames, palette)
    if dither == "ordered":
        tile = np.rint(_bayer_matrix() * _median_spacing(palette)).astype(np.int16)
        offsets = np.tile(tile, (height // 8 + 1, width // 8 + 1))[:height, :width, None]
        frames = np.stack([np.clip(frame + offsets, 0, 255).astype(np.uint8) for frame in frames])
    used = np.zeros(1 << (8 * 2 + _LUT_BITS), dtype=bool)  # indexed by 0x00BBGGRR words of 7-bit levels
    for frame in each_frame(frames, check_cancel):  # keys are cheap to recompute, storing them costs 8 B/pixel
        used[_packed_rgb(frame, _LUT_BITS)] = True
    cells = np.flatnonzero(used)
    shift = 8 - _LUT_BITS
    centres = (_unpack_rgb(cells, _LUT_BITS) << shift).astype(np.float32) + ((1 << shift) - 1) / 2.0
    table = np.zeros(used.size, dtype=np.uint8)
    table[cells] = _nearest(centres, palette.astype(np.float32))
    indices = np.empty((count, height, width), dtype=np.uint8)
    for i, frame in enumerate(each_frame(frames, check_cancel)):
        indices[i] = table[_packed_rgb(frame, _LUT_BITS)].reshape(height, width)
    return indices


def _floyd_steinberg(frames: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Pillow's C Floyd-Steinberg error diffusion against ``palette`` -> indices (N, H, W) uint8.

    Pillow pads a short palette with black; the padding repeats colour 0 instead and maps back to index 0.
    """
    padded = np.concatenate([palette, np.repeat(palette[:1], PALETTE_SIZE - len(palette), axis=0)])
    target = Image.new("P", (1, 1))
    target.putpalette(padded.tobytes())
    indices = np.stack(
        [np.asarray(Image.fromarray(f).quantize(palette=target, dither=Image.Dither.FLOYDSTEINBERG)) for f in frames]
    )
    return np.where(indices < len(palette), indices, 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# File


def encode_gif(
    frames: torch.Tensor | np.ndarray,
    fp: BinaryIO | str | os.PathLike[str],
    *,
    fps: float,
    loop: int = 0,
    pingpong: bool = False,
    dither: GifDither = "none",
    comment: str | None = None,
    check_cancel: CancelCheck | None = None,
) -> None:
    """Write an animated GIF of ``frames`` (N, H, W, 3) float [0, 1] or uint8 to ``fp`` (binary file or path).

    ``loop``: how many times it plays, 0 = forever (GIF stores the repeats after the first play, so 1 writes no
    loop extension). ``pingpong``: play forwards then backwards (6 frames -> 10). ``comment``: text stored in
    a GIF comment extension (ASCII recommended). ``check_cancel``: called between frames while mapping and
    writing; it raises to stop. See the module docstring for palette, dither and timing.
    """
    plays = check_loop(loop)
    check_fps(fps)
    rgb = as_uint8_frames(frames)
    if rgb.shape[1] > 65535 or rgb.shape[2] > 65535:
        raise Pix2GifInputError(f"frames: GIF allows at most 65535x65535 pixels, got {rgb.shape[2]}x{rgb.shape[1]}.")
    palette = clip_palette(rgb)
    indices = map_to_palette(rgb, palette, dither, check_cancel)
    order = pingpong_order(len(indices)) if pingpong else list(range(len(indices)))
    durations = frame_durations_ms(len(order), fps, GIF_TICK_MS, GIF_MIN_DELAY_MS)
    palette_bytes = palette.tobytes()
    images = []
    for frame in indices:
        image = Image.frombuffer("P", (frame.shape[1], frame.shape[0]), frame, "raw", "P", 0, 1)
        image.putpalette(palette_bytes)
        images.append(image)
    sequence = [images[i] for i in order]
    options: dict[str, object] = {"duration": durations, "optimize": False, "disposal": 1}
    if plays != 1:
        options["loop"] = 0 if plays == 0 else plays - 1
    if comment:
        options["comment"] = comment
    # No palette= argument on purpose: Pillow would then re-match every frame's palette through a dict
    # (~7 ms/frame, and duplicate colours get re-mapped); with it omitted, later frames carry a copy of the
    # same palette as a local colour table (768 bytes each).
    sequence[0].save(fp, format="GIF", save_all=True, append_images=each_frame(sequence[1:], check_cancel),
                     **options)
