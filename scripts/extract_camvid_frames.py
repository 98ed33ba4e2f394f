"""Extract every frame of an original CamVid video as PNGs named like the SegNet CamVid files.

    python scripts/extract_camvid_frames.py VIDEO --sequence 0006R0 --out <root>/CamVid/frames \
        [--first-frame N] [--size 480x360] [--ffmpeg] [--overwrite]

writes ``<out>/<sequence>/<sequence>_<frame>.png``, frame number ``first-frame + i``
for the video's i-th decoded frame (i from 0), written as the SegNet files of
that sequence write it (``datasets.camvid.sequence_frame_name``: 0001TP_%06d,
0006R0_f%05d, 0016E5_%05d, Seq05VD_f%05d): the layout ``CamVidClipDataset``
reads (``datasets.camvid.CLIP_LAYOUT``). Frames whose number would be negative
are skipped. The SegNet images are 480x360, the videos 960x720: pass
``--size 480x360`` (OpenCV INTER_AREA) so that the frames match the labelled
images, which the loader requires. Decoding is OpenCV's (``cv2.VideoCapture``),
or with ``--ffmpeg`` the ``ffmpeg`` program (``-vsync 0``: every decoded frame
once, none duplicated or dropped; ``ffprobe`` gives the size).

Each PNG is written whole or not at all (temporary file, fsync, rename), so an
interrupted run leaves no half-written frame. A video that does not open, an
output folder that already holds files (unless ``--overwrite``: frames are then
replaced one by one and, after a complete run, the sequence's frames this run
did not write are removed) and a full disk each end with one ``error:`` line;
the frames written before a full disk are complete.

What the original videos are (found 2026-12-06 by searching public code and
pages, not checked against the videos, which we do not have):

* Files: ``01TP_extract.avi`` (sequence 0001TP), ``0006R0.MXF``, ``0016E5.MXF``
  (distributed as ``0016E5.zip.001`` + ``.002``) and ``0005VD.MXF`` (sequence
  Seq05VD), from the CamVid page (http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/;
  download folder http://vis.cs.ucl.ac.uk/Download/G.Brostow/CamVid/ in
  preparation scripts), 30 Hz, labelled at 1 Hz and partly at 15 Hz (Brostow et
  al., Pattern Recognition Letters 2009; the dataset page
  http://web4.cs.ucl.ac.uk/staff/g.brostow/MotionSegRecData/). NVIDIA/semantic-segmentation
  issue #22: the unlabelled frames come from decoding these videos.
* Frame numbers: by two of three sources the labelled numbers are not plain
  0-based indices of ``01TP_extract.avi``, an extract of a longer recording.
  TMANet's conversion script (wanghao9610/TMANet,
  tools/convert_datasets/camvid_video_process.py) names its first decoded frame
  0001TP_006660 (labelled frame 6690 = decoded frame 30), and so does an
  independent ffmpeg script in public code (repository not identified:
  ``-start_number 6690`` for ``select='between(n,30,3690)'``): ``--first-frame
  6660``. For the three MXF files TMANet names the first decoded frame -1
  (``--first-frame -1``: labelled n = decoded frame n + 1), the ffmpeg script 0
  (``--first-frame 0``, the default): one frame apart. A third script (public
  code, repository not identified) instead takes decoded frame 0 to be the first
  labelled frame of every sequence (6690, 930, 390 and 0 for 0001TP, 0006R0,
  0016E5 and Seq05VD). TMANet's comments give the decoded frame counts 6600
  (0005VD), 7170 (0006R0), 11382 (0016E5) and 3751 (01TP_extract).
* Unverified: all of the above. Check an extraction before training: the frame
  named like a labelled image should be that image (at ``--size 480x360``,
  compare it with ``CamVid/<split>/<name>.png``) and look closer than its
  neighbours; if a neighbour matches better, rerun with ``--first-frame`` one
  off and ``--overwrite``. (A fourth script in public code finds the offset
  that way: it matches the first labelled image against the video's first
  frames and then checks every labelled image; it records no numbers.)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from cli.main import run_main  # noqa: E402  (after the path)
from datasets.camvid import SEQUENCE_NAMING, parse_frame_name, sequence_frame_name  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.fileio import WRITE_ERRNOS, atomic_write, check_output_dir, write_failure  # noqa: E402

__all__ = ["extract", "main", "parse_size"]

PROGRESS_EVERY = 1000  # frames between two progress lines


def parse_size(text: str) -> tuple[int, int]:
    """``"480x360"`` -> ``(480, 360)`` (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
        if width < 1 or height < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 480x360, got {text!r}") from None
    return width, height


def _opencv_frames(video: str) -> tuple[Iterator[np.ndarray], int]:
    """BGR frames of ``video`` decoded by OpenCV, and the frame count its container reports (0: none).

    The first frame is decoded before this returns, so a video that does not open fails before any output.
    """
    capture = cv2.VideoCapture(video)
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise UserError(f"cannot read a frame of {video!r} with OpenCV: not a video or an unsupported codec "
                        "(try --ffmpeg)")
    reported = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def frames() -> Iterator[np.ndarray]:
        try:
            frame = first
            while frame is not None:
                yield frame
                ok, frame = capture.read()
                frame = frame if ok else None
        finally:
            capture.release()
    return frames(), reported


def _ffmpeg_frames(video: str) -> tuple[Iterator[np.ndarray], int]:
    """BGR frames of ``video`` decoded by the ffmpeg program (size from ffprobe, checked before this returns);
    no reported frame count (0)."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        raise UserError("--ffmpeg needs the ffmpeg and ffprobe programs on PATH; without --ffmpeg OpenCV decodes")
    probe = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                            "-of", "csv=p=0", video], capture_output=True, text=True)
    try:
        width, height = (int(v) for v in probe.stdout.strip().split(",")[:2])
    except ValueError:
        detail = probe.stderr.strip().splitlines()[-1:] or ["no video stream"]
        raise UserError(f"ffprobe cannot read a video stream of {video!r}: {detail[0]}") from None

    def frames() -> Iterator[np.ndarray]:
        size = width * height * 3
        with tempfile.TemporaryFile() as errors:   # a file, not a pipe: a chatty ffmpeg cannot block on it
            proc = subprocess.Popen([ffmpeg, "-v", "error", "-nostdin", "-i", video, "-map", "0:v:0", "-vsync", "0",
                                     "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                                    stdout=subprocess.PIPE, stderr=errors)
            finished = False
            try:
                while True:
                    data = proc.stdout.read(size)
                    if len(data) < size:
                        finished = True
                        break
                    yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
            finally:
                proc.stdout.close()
                if not finished:   # the caller stopped early (an error, Ctrl-C): stop ffmpeg too
                    proc.kill()
                status = proc.wait()
            if status != 0:
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-1:] or [f"status {status}"]
                raise UserError(f"ffmpeg failed on {video!r}: {tail[0]}")
    return frames(), 0


def _existing_frames(folder: str, sequence: str) -> set[str]:
    """Files in ``folder`` named as frames of ``sequence`` (``<sequence>_<frame>.png``)."""
    names = set()
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        try:
            number = parse_frame_name(stem).number
        except ValueError:
            continue
        if ext == ".png" and sequence_frame_name(sequence, number) == stem:
            names.add(name)
    return names


def extract(video: str, sequence: str, out: str, first_frame: int = 0, size: Optional[tuple[int, int]] = None,
            use_ffmpeg: bool = False, overwrite: bool = False) -> int:
    """Write every frame of ``video`` to ``<out>/<sequence>/``; returns the number of frames written."""
    if sequence not in SEQUENCE_NAMING:
        raise UserError(f"unknown sequence {sequence!r}; the CamVid sequences are {', '.join(SEQUENCE_NAMING)}")
    if not os.path.isfile(video):
        raise UserError(f"video file not found: {video!r}")
    folder = os.path.join(out, sequence)
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
        raise UserError(f"{folder} already holds {len(os.listdir(folder))} file(s); pass --overwrite to replace "
                        "its frames, or choose another --out")
    # a video that does not open fails here, before any output
    frames, reported = _ffmpeg_frames(video) if use_ffmpeg else _opencv_frames(video)
    old = _existing_frames(folder, sequence) if os.path.isdir(folder) else set()
    check_output_dir(folder, "--out")

    written, skipped, last = 0, 0, None
    for index, frame in enumerate(frames):
        number = first_frame + index
        if number < 0:
            skipped += 1
            continue
        if size is not None and (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", frame)
        if not ok:
            raise UserError(f"OpenCV could not encode frame {index} of {video!r} as PNG")
        path = os.path.join(folder, sequence_frame_name(sequence, number) + ".png")
        try:
            atomic_write(path, png.tobytes())
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            done = f"{written} frame(s) up to {last} are complete" if last else "no frame was written"
            raise UserError(f"{write_failure(exc)}; {done}, nothing half-written was kept; free space and rerun "
                            "with --overwrite") from None
        old.discard(os.path.basename(path))
        written, last = written + 1, os.path.basename(path)
        if written % PROGRESS_EVERY == 0:
            print(f"{written} frames ... {last}", flush=True)
    if not written:
        raise UserError(f"no frame of {video!r} has a frame number >= 0 (--first-frame {first_frame}, "
                        f"{skipped} frame(s) decoded)")
    for name in sorted(old):   # an earlier extraction's frames that this complete run did not replace
        os.remove(os.path.join(folder, name))
    first_name = sequence_frame_name(sequence, first_frame + skipped)
    print(f"wrote {written} frames {first_name}.png .. {last} to {folder}"
          + (f" ({skipped} frame(s) before frame 0 skipped)" if skipped else "")
          + (f"; removed {len(old)} frame(s) of an earlier extraction" if old else ""), flush=True)
    if reported and reported != written + skipped:   # a decoding error ends OpenCV's stream early, silently
        print(f"note: decoded {written + skipped} frames, the container reports {reported}; a difference can mean a "
              "decoding problem (compare with --ffmpeg) or only an inexact count in the file", flush=True)
    return written


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="an original CamVid video (01TP_extract.avi, 0006R0.MXF, 0016E5.MXF, 0005VD.MXF)")
    parser.add_argument("--sequence", required=True, choices=list(SEQUENCE_NAMING),
                        help="the sequence the video holds (names the frames)")
    parser.add_argument("--out", required=True, help="the frames folder, <root>/CamVid/frames")
    parser.add_argument("--first-frame", type=int, default=0, metavar="N",
                        help="frame number of the video's first frame (default 0; see the notes above)")
    parser.add_argument("--size", type=parse_size, metavar="WxH",
                        help="resize the frames to WIDTHxHEIGHT (480x360 for the SegNet CamVid images)")
    parser.add_argument("--ffmpeg", action="store_true", help="decode with the ffmpeg program instead of OpenCV")
    parser.add_argument("--overwrite", action="store_true", help="replace the frames of an earlier extraction")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)

    def run() -> int:
        extract(args.video, args.sequence, args.out, args.first_frame, args.size, args.ffmpeg, args.overwrite)
        return 0
    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
