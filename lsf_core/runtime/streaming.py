"""StreamingAnimator: live PCM chunks in, timed face frames out. No ROS here.

Audio of any sample rate, format and channel count arrives in chunks of any size, each with the
capture time of its first sample. The animator keeps one clock: model frame k shows the audio at
``t0 + k / 25`` (t0 = the first chunk's stamp); output frames are sampled at ``rate`` Hz on the same
clock and interpolated between model frames. Gaps become silence (long gaps relax the face and
restart the stream without a burst of frames), late and out-of-order audio is trimmed or dropped and
counted, and memory stays bounded.

After the model, the liveliness layer (``liveliness``) adds what audio cannot predict: blinks, gaze, head
motion, brows and idle motion (``Frame.pose`` holds head and eye angles); switched off, frames are exactly
the model's output.

Models that stream (``forward_stream``: the ``realtime`` preset) are fed hop by hop with their own
caches. Clip-based models (the ``paper`` preset) run on a sliding window of ``window`` seconds of left
context plus ``lookahead`` seconds of future, every ``hop``; overlapping predictions are cross-faded.

Long because the engine is one state machine (input clock, model stepping, output sampling) whose
parts share the stream's state; the voice gate, devices and the worker live in their own modules.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from lsf_core.arkit import ARKIT_NAMES, POSE_NAMES
from lsf_core.audio import MODEL_RATE, AudioError, StreamResampler, downmix, to_float
from lsf_core.face.head_pose import eye_centre, head_pivot
from lsf_core.models.base import FPS, SAMPLES_PER_FRAME, AnimationModel
from lsf_core.runtime.device import pick_device, to_device
from lsf_core.runtime.gate import VoiceGate
from lsf_core.runtime.liveliness import Liveliness, LivelinessConfig

log = logging.getLogger(__name__)

MAX_FILLED_GAP = 0.5   # s: shorter gaps are filled with silence, longer ones restart the stream
LATE_TOLERANCE = 0.002  # s: stamps this close to the expected time count as contiguous
CLOCK_RESET = 1.0      # s: two contiguous chunks this far in the past mean the source's clock restarted


@dataclass
class StreamConfig:
    model: str = "realtime"        # preset name (shipped weights) or path to a .safetensors model
    neutral_mesh: str = ""         # rig file (.npz/.obj/.ply/.glb); "" = the default avatar
    flame_model: str = ""          # FLAME model file, for models that output FLAME parameters
    rate: float = 30.0             # output frames per second (25..120)
    window: float = 2.0            # s of left context for clip-based models
    hop: float = 0.04              # s between model evaluations
    lookahead: float = 0.08        # s of future audio clip-based models see
    smoothing: float = 0.0         # 0..0.95 exponential smoothing of the outputs
    device: str = "auto"           # auto | cpu | cuda
    precision: str = "fp32"        # fp32 | fp16 | bf16
    threads: int = 1               # CPU threads for inference: 1 is fastest for a live stream (tiny ops)
    max_queue: float = 2.0         # s of audio one push may bring; older audio becomes silence (0 = no limit)
    relax_time: float = 0.2        # s for the face to relax to neutral in silence
    vad_threshold_db: float = -50.0  # frame RMS (dBFS) under which a frame counts as silence
    vad_hangover: float = 0.12     # s of silence before relaxing starts
    liveliness: LivelinessConfig = field(default_factory=LivelinessConfig)  # blinks, gaze, head, brows, idle

    def validate(self) -> StreamConfig:
        checks = [
            (25.0 <= self.rate <= 120.0, f"rate must be within 25..120 Hz, got {self.rate}"),
            (0.04 <= self.hop <= 1.0, f"hop must be within 0.04..1 s, got {self.hop}"),
            (0.0 <= self.lookahead <= 2.0, f"lookahead must be within 0..2 s, got {self.lookahead}"),
            (0.2 <= self.window <= 30.0, f"window must be within 0.2..30 s, got {self.window}"),
            (0.0 <= self.smoothing <= 0.95, f"smoothing must be within 0..0.95, got {self.smoothing}"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
            (self.precision in ("fp32", "fp16", "bf16"),
             f"precision must be fp32, fp16 or bf16, got {self.precision!r}"),
            (self.max_queue >= 0.0, f"max_queue must be >= 0, got {self.max_queue}"),
            (1 <= self.threads <= 256, f"threads must be within 1..256, got {self.threads}"),
            (self.relax_time > 0.0, f"relax_time must be > 0, got {self.relax_time}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.liveliness.validate()
        return self


@dataclass
class Frame:
    """One output frame. ``vertex_offsets`` (V, 3) float32 metres are computed on first use and kept: a dense
    product over every vertex (0.3-0.4 ms a frame for the 23811-vertex avatar on a 2-vCPU machine, about 0.01 of
    the RTF), which consumers of blendshapes, FLAME parameters or pose alone never pay for."""
    stamp: float
    blendshapes: np.ndarray
    make_offsets: Callable[[], np.ndarray] = field(repr=False)
    flame: np.ndarray | None = None
    pose: np.ndarray = field(default_factory=lambda: np.zeros(len(POSE_NAMES), np.float32))  # rad, POSE_NAMES
    _offsets: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def vertex_offsets(self) -> np.ndarray:
        if self._offsets is None:
            self._offsets = np.asarray(self.make_offsets(), np.float32)
        return self._offsets


@dataclass
class _Stats:
    chunks: int = 0
    samples: int = 0
    dropped_chunks: int = 0
    dropped_seconds: float = 0.0   # audio dropped or trimmed: late, duplicate, stale
    silenced_seconds: float = 0.0  # audio replaced by silence: one push held more than max_queue
    late_chunks: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0       # audio time filled with silence (gaps in the stamps up to MAX_FILLED_GAP)
    restarts: int = 0
    clock_resets: int = 0
    clipped_chunks: int = 0
    model_resets: int = 0
    device_fallbacks: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    hop_ms: deque = field(default_factory=lambda: deque(maxlen=2000))


class StreamingAnimator:
    def __init__(self, config: StreamConfig | None = None, model: AnimationModel | None = None, rig=None):
        from lsf_core.models.registry import load_model

        self.config = (config or StreamConfig()).validate()
        self._stats = _Stats()
        self.device = pick_device(self.config.device)
        if self.device == "cpu":
            # one hop is a few hundred tiny ops: thread wake-ups cost more than they save (p95 3 ms on one
            # thread vs 80 ms on two, on the 2-core build machine). Process-wide: the animator owns its process.
            torch.set_num_threads(self.config.threads)
            # numpy's BLAS too (each frame's vertex offsets are a BLAS product): OpenBLAS's own spinning threads
            # fought torch's, 18 ms a frame instead of 0.1 ms under load (lsf bench --stream: RTF 0.094 -> 0.042)
            threadpool_limits(self.config.threads, user_api="blas")
        self.model = model if model is not None else load_model(self.config.model)
        self.model.eval()
        self._flame = None
        if self.model.output_kind == "flame" and self.config.flame_model:
            from lsf_core.face.flame import FlameModel

            self._flame = FlameModel.load(self.config.flame_model)
        self.rig = rig if rig is not None else self._load_rig()
        self._move_model()
        self.blendshape_names = list(ARKIT_NAMES)
        self._streams = hasattr(self.model, "forward_stream")
        identity = np.asarray(self.rig.identity, np.float32).reshape(-1)
        if self.model.output_kind == "flame" and identity.size != self.model.identity_dim:
            log.info("rig %r has no %d-d FLAME shape: animating the mean FLAME identity (give flame_model and a "
                     "neutral mesh in FLAME topology to use the speaker's)", self.rig.name, self.model.identity_dim)
            identity = np.zeros(self.model.identity_dim, np.float32)
        self._identity = torch.from_numpy(identity).reshape(1, -1)
        self._k = len(self.model.output_names)
        if self.model.output_kind == "arkit":
            self._to_rig = self._named_matrix(self.model.output_names, self.rig.blendshape_names)
            self._to_arkit = self._named_matrix(self.model.output_names, self.blendshape_names)
        self._arkit_to_rig = self._named_matrix(self.blendshape_names, self.rig.blendshape_names)
        self.head_pivot = head_pivot(self.rig.vertices)
        self.liveliness = Liveliness(self.config.liveliness, eye_centre(self.rig.vertices, self.rig.regions),
                                     self.model.lookahead_frames + 1 if self._streams else 3,
                                     self.config.vad_threshold_db)
        self._feed_offset = 0
        self.reset()
        if self._streams:
            try:
                self._feed_offset = self._frame_offset()
                self._warm_up()
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                if self.device == "cpu":
                    raise
                self._fall_back_to_cpu(err)
                self._feed_offset = self._frame_offset()
                self._warm_up()

    def _load_rig(self):
        """The neutral mesh's rig, or the default avatar. With a FLAME model the rig is FLAME's, its shape
        fitted to the neutral mesh (which must then be in FLAME topology), or FLAME's template."""
        from lsf_core.face.avatar import default_rig
        from lsf_core.face.loader import check_animatable, open_rig
        from lsf_core.face.rig import load_rig

        mesh = self.config.neutral_mesh
        if self._flame is not None:
            return self._flame.rig(self._flame.fit_shape(load_rig(mesh).vertices) if mesh else None)
        if not mesh:
            return default_rig()
        rig = open_rig(mesh)   # a plain mesh is rigged here (cached); its identity is fitted
        for note in rig.notes:
            log.info("neutral_mesh %s: %s", mesh, note)
        for warning in rig.warnings:
            log.warning("neutral_mesh %s: %s", mesh, warning)
        if self.model.output_kind == "arkit":
            check_animatable(rig, self.model.output_names, f"rig file {mesh}")
        return rig

    def _frame_offset(self) -> int:
        """Samples past a 40 ms boundary at which the streaming model finishes a frame (its feature window
        reaches past the frame's end). Model steps that end there let each frame out as soon as its audio
        is in, instead of waiting for the next whole hop."""
        ident = self._identity.to(self.device)
        with self._inference():
            state, fed = self.model.init_state(1, self.device), 0
            for _ in range(100):  # whole frames until the first output (a model with no output: offset 0)
                out, state = self.model.forward_stream(torch.zeros(1, SAMPLES_PER_FRAME, device=self.device),
                                                       state, ident)
                fed += SAMPLES_PER_FRAME
                if out.shape[1]:
                    break
            else:
                return 0
            state = self.model.init_state(1, self.device)  # again, 1 ms at a time over the last frame
            _, state = self.model.forward_stream(torch.zeros(1, fed - SAMPLES_PER_FRAME, device=self.device),
                                                 state, ident)
            step = MODEL_RATE // 1000
            for n in range(fed - SAMPLES_PER_FRAME + step, fed + 1, step):
                out, state = self.model.forward_stream(torch.zeros(1, step, device=self.device), state, ident)
                if out.shape[1]:
                    return n % SAMPLES_PER_FRAME
        return 0

    def _warm_up(self) -> None:
        """Run a few seconds of silence hop by hop on a scratch state, so that one-time costs (graph
        tracing, allocator growth) happen now and not in the middle of the first utterance."""
        state = self.model.init_state(1, self.device)
        silence = torch.zeros(1, SAMPLES_PER_FRAME, device=self.device)
        with self._inference():
            _, state = self.model.forward_stream(silence[:, :self._feed_offset], state, self._identity.to(self.device))
            for _ in range(getattr(self.model.config, "context", 50) + 10):
                _, state = self.model.forward_stream(silence, state, self._identity.to(self.device))

    # ---- configuration -------------------------------------------------------------------------
    @staticmethod
    def _named_matrix(src: list[str], dst: list[str]) -> np.ndarray:
        from lsf_core.arkit import canonical_name

        index = {canonical_name(n): i for i, n in enumerate(dst)}
        m = np.zeros((len(src), len(dst)), np.float32)
        for i, n in enumerate(src):
            j = index.get(canonical_name(n))
            if j is not None:
                m[i, j] = 1.0
        return m

    def _move_model(self) -> None:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.config.precision]
        if dtype is torch.float16 and self.device == "cpu":
            log.warning("fp16 is not supported on the CPU: using fp32")
            dtype = torch.float32
        self._dtype = dtype
        try:
            self.model.to(self.device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # CUDA broken or out of memory
            if self.device == "cpu":
                raise
            self._fall_back_to_cpu(err)

    def _inference(self) -> contextlib.ExitStack:
        """Inference mode, in the configured precision: fp16/bf16 run the network under autocast (matrix
        products in that precision, reductions and the audio front end's sensitive steps in fp32, as torch
        chooses per op); outputs come back as fp32."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self._dtype is not torch.float32:
            stack.enter_context(torch.autocast(self.device.split(":")[0], dtype=self._dtype))
        return stack

    def _fall_back_to_cpu(self, err: Exception) -> None:
        """The accelerator failed (out of memory, driver error): carry on on the CPU, stream state included."""
        log.warning("%s failed (%s: %s): falling back to the CPU", self.device, type(err).__name__, err)
        self._stats.device_fallbacks += 1
        self.device = "cpu"
        if self._dtype is torch.float16:
            log.warning("fp16 is not supported on the CPU: using fp32")
            self._dtype = torch.float32
        self.model.to("cpu")
        if getattr(self, "_state", None) is not None:
            try:
                self._state = to_device(self._state, "cpu")
            except (RuntimeError, NotImplementedError) as state_err:  # unreadable device memory: start afresh
                log.warning("the stream state could not be copied (%s): the model restarts its context", state_err)
                self._state = self.model.init_state(1, "cpu")

    def set_rate(self, hz: float) -> None:
        if not 25.0 <= hz <= 120.0:
            raise ValueError(f"rate must be within 25..120 Hz, got {hz}")
        # keep the clock: the next output frame is the first one after what was already emitted
        t_next = self._out_index / self.config.rate
        self.config.rate = float(hz)
        self._out_index = math.ceil(t_next * hz - 1e-9)

    def set_liveliness(self, enabled: bool | None = None, **groups: bool) -> None:
        """Switch the liveliness layer (``enabled``) or its groups (blinks, gaze, head, brows, idle) at run time."""
        if enabled is not None:
            self.config.liveliness.enabled = bool(enabled)
        self.liveliness.set_groups(**groups)

    def set_smoothing(self, alpha: float) -> None:
        if not 0.0 <= alpha <= 0.95:
            raise ValueError(f"smoothing must be within 0..0.95, got {alpha}")
        self.config.smoothing = float(alpha)

    # ---- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new clock."""
        self._t0: float | None = None          # stamp of model-rate sample 0
        self._in_rate: int | None = None
        self._resampler: StreamResampler | None = None
        self._expected: float | None = None    # stamp the next input sample should have
        self._stale_end: float | None = None    # end stamp of the last chunk that came from far in the past
        self._pending = np.zeros(0, np.float32)  # model-rate audio not yet given to the model
        self._fed = 0                           # model-rate samples given to the model
        self._model_frames: list[np.ndarray] = []  # recent model frames (activated outputs)
        self._frame_base = 0                    # model frame index of _model_frames[0]
        self._out_index = 0                     # next output frame index on the output clock
        self._gate = VoiceGate(self.config.vad_threshold_db, self.config.vad_hangover, self.config.relax_time)
        self._smoothed: np.ndarray | None = None
        self._window_audio = np.zeros(0, np.float32)  # clip-based models: recent audio
        self._window_start = 0                  # model-rate sample index of _window_audio[0]
        self._prev_window: tuple[int, np.ndarray] | None = None
        self._state = self.model.init_state(1, self.device) if self._streams else None
        self.liveliness.new_stream()

    def stats(self) -> dict:
        s = self._stats
        hop = sorted(s.hop_ms)

        def pct(q: float) -> float:
            return float(hop[min(len(hop) - 1, int(q * len(hop)))]) if hop else 0.0

        latency_ms = 1000.0 * (self.algorithmic_latency())
        return {"chunks": s.chunks, "samples": s.samples, "dropped_chunks": s.dropped_chunks,
                "dropped_seconds": round(s.dropped_seconds, 4), "silenced_seconds": round(s.silenced_seconds, 4),
                "late_chunks": s.late_chunks, "gaps": s.gaps, "gap_seconds": round(s.gap_seconds, 4),
                "restarts": s.restarts, "clock_resets": s.clock_resets, "clipped_chunks": s.clipped_chunks,
                "model_resets": s.model_resets, "device_fallbacks": s.device_fallbacks,
                "frames": s.frames, "audio_seconds": round(s.audio_seconds, 4),
                "rtf": (s.compute_seconds / s.audio_seconds) if s.audio_seconds else 0.0,
                "hop_ms_p50": pct(0.5), "hop_ms_p95": pct(0.95), "algorithmic_latency_ms": latency_ms,
                "device": self.device}

    def algorithmic_latency(self) -> float:
        """Seconds from the start of a model frame's audio to the moment the frame can be computed: its own
        40 ms, the look-ahead and the part of the feature window that reaches past it (streaming models);
        look-ahead + hop for clip-based ones. Output rates other than 25 Hz add up to one model frame
        (interpolation waits for the next model frame)."""
        if self._streams:
            return ((self.model.lookahead_frames + 1) * SAMPLES_PER_FRAME + self._feed_offset) / MODEL_RATE
        return self.config.lookahead + self.config.hop

    # ---- input ---------------------------------------------------------------------------------
    def push(self, samples: np.ndarray, sample_rate: int, stamp: float, restart: bool = False) -> list[Frame]:
        """Feed one chunk captured at ``stamp`` (s); return the frames it completes. ``restart``: the stamps' time
        line moved back here (``ChunkClock.moved_back``): finish the stream and start a new one at ``stamp``
        instead of trimming the audio that overlaps what was already animated (counted in ``clock_resets``)."""
        x = np.asarray(samples)
        if x.ndim not in (1, 2) or x.size == 0:
            raise AudioError(f"audio chunk must be a non-empty (n,) or (n, channels) array, got shape {x.shape}")
        if int(sample_rate) <= 0 or int(sample_rate) > 384000:
            raise AudioError(f"sample rate {sample_rate} is out of range 1..384000")
        if not math.isfinite(stamp):
            raise AudioError(f"chunk stamp {stamp} is not finite")
        mono = downmix(to_float(x, "audio chunk"))
        sample_rate = int(sample_rate)
        duration = mono.size / sample_rate
        self._stats.chunks += 1
        if np.abs(mono).max() > 1.0:  # out of range (e.g. integer PCM sent as float): clip, never overflow
            self._stats.clipped_chunks += 1
            mono = np.clip(mono, -1.0, 1.0)
        frames: list[Frame] = []
        if self._t0 is None or sample_rate != self._in_rate or restart:
            if self._t0 is not None:  # rate change or a new time line: finish what we have, then start a new clock
                self._stats.clock_resets += restart
                frames += self.flush()
            self._start(stamp, sample_rate)
        gap = stamp - self._expected
        if gap < -CLOCK_RESET:
            # Far in the past. One such chunk is a stale duplicate (dropped below); a second one that continues
            # it means the source's clock restarted: follow it rather than drop everything from now on.
            follows = self._stale_end is not None and abs(stamp - self._stale_end) <= MAX_FILLED_GAP
            self._stale_end = stamp + duration
            if follows:
                self._stats.clock_resets += 1
                frames += self.flush()
                self._start(stamp, sample_rate)
                gap = 0.0
        else:
            self._stale_end = None
        if gap < -LATE_TOLERANCE:  # late or out of order: keep only the part after what we consumed
            self._stats.late_chunks += 1
            skip = int(round(-gap * sample_rate))
            if skip >= mono.size:
                self._stats.dropped_chunks += 1
                self._stats.dropped_seconds += duration
                return frames
            self._stats.dropped_seconds += skip / sample_rate
            mono = mono[skip:]
            stamp = self._expected
        elif gap > MAX_FILLED_GAP:
            self._stats.gaps += 1
            self._stats.restarts += 1
            frames += self.flush()
            self._start(stamp, sample_rate)
        elif gap > LATE_TOLERANCE:
            self._stats.gaps += 1
            self._stats.gap_seconds += gap
            mono = np.concatenate([np.zeros(int(round(gap * sample_rate)), np.float32), mono])
            stamp = self._expected   # mono starts where the last chunk ended, its silence first
        self._expected = stamp + mono.size / sample_rate if gap <= MAX_FILLED_GAP else stamp + duration
        self._stats.samples += mono.size
        self._stats.audio_seconds += mono.size / sample_rate
        if self.config.max_queue and mono.size > self.config.max_queue * sample_rate:
            keep = int(self.config.max_queue * sample_rate)
            self._stats.silenced_seconds += (mono.size - keep) / sample_rate
            silence = np.zeros(mono.size - keep, np.float32)  # keep the clock: dropped audio = silence
            mono = np.concatenate([silence, mono[-keep:]])
        self._pending = np.concatenate([self._pending, self._resampler(mono)])
        return frames + self._run(final=False)

    def animate(self, samples: np.ndarray, sample_rate: int, stamp: float = 0.0) -> list[Frame]:
        """A whole clip at once (offline). Streaming models run exactly the live code path; clip-based
        models see the whole clip in one window, as they were trained."""
        self.reset()
        if self._streams:
            max_queue, self.config.max_queue = self.config.max_queue, 0.0
            try:
                return self.push(samples, sample_rate, stamp) + self.flush()
            finally:
                self.config.max_queue = max_queue
        audio = StreamResampler(int(sample_rate), MODEL_RATE)(downmix(to_float(np.asarray(samples), "clip")))
        if audio.size == 0:
            raise AudioError("clip holds no samples")
        self._start(stamp, int(sample_rate))
        with self._inference():
            pred = self.model(torch.from_numpy(audio).to(self.device).unsqueeze(0),
                              self._identity.to(self.device))[0].float().cpu().numpy()
        self._append_model_frames(pred, audio)
        frames = self._emit(end=audio.size / SAMPLES_PER_FRAME)
        self._t0 = None
        return frames

    def flush(self) -> list[Frame]:
        """End of stream: push the look-ahead's worth of silence and emit every remaining frame."""
        if self._t0 is None:
            return []
        real = self._fed + self._pending.size
        n_real = math.ceil(real / SAMPLES_PER_FRAME)
        tail = (n_real * SAMPLES_PER_FRAME - real) + self._flush_samples()
        self._pending = np.concatenate([self._pending, np.zeros(tail, np.float32)])
        frames = self._run(final=True, end=real / SAMPLES_PER_FRAME)
        self._t0 = None
        return frames

    def _start(self, stamp: float, rate: int) -> None:
        stats = self._stats
        self.reset()
        self._stats = stats
        self._t0, self._in_rate, self._expected = stamp, rate, stamp
        self._resampler = StreamResampler(rate, MODEL_RATE)

    def _flush_samples(self) -> int:
        """Silence that pushes the last real frames out of a streaming model. Clip-based models get none:
        their last window ends at the audio's end (padded to a whole frame), as a whole clip would."""
        return self.model.stream_flush_samples() if self._streams else 0

    # ---- model ---------------------------------------------------------------------------------
    def _run(self, final: bool, end: float | None = None) -> list[Frame]:
        hop = max(SAMPLES_PER_FRAME, int(round(self.config.hop * MODEL_RATE)) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME)
        if final and not self._streams and not self._pending.size and self._window_audio.size:
            self._append_model_frames(self._window_step(self._pending, last=True), self._pending)
        while self._pending.size:
            n = hop
            if self._streams:  # steps end where the model finishes frames (see _frame_offset)
                n = self._feed_offset + hop * ((self._fed - self._feed_offset) // hop + 1) - self._fed
            if n > self._pending.size:
                if not final:
                    break
                n = self._pending.size
            chunk, self._pending = self._pending[:n], self._pending[n:]
            t_start = time.perf_counter()
            if self._streams:
                new = self._stream_step(chunk)
            else:
                new = self._window_step(chunk, final and not self._pending.size)
            elapsed = time.perf_counter() - t_start
            self._stats.compute_seconds += elapsed
            self._stats.hop_ms.append(1000.0 * elapsed)
            self._fed += n
            self._append_model_frames(new, chunk)
        return self._emit(end)

    def _stream_step(self, chunk: np.ndarray) -> np.ndarray:
        try:
            out = self._forward_stream(chunk)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if self.device == "cpu":
                raise
            self._fall_back_to_cpu(err)
            out = self._forward_stream(chunk)
        if not np.isfinite(out).all():  # never let a NaN live on in the caches: restart the model's state
            log.warning("the model produced NaN/Inf: its stream state is reset")
            self._stats.model_resets += 1
            self._state = self.model.init_state(1, self.device)
            out = np.zeros_like(out)
        return out

    def _forward_stream(self, chunk: np.ndarray) -> np.ndarray:
        with self._inference():
            audio = torch.from_numpy(chunk).to(self.device).unsqueeze(0)
            out, self._state = self.model.forward_stream(audio, self._state, self._identity.to(self.device))
        return out[0].float().cpu().numpy()

    def _window_step(self, chunk: np.ndarray, last: bool) -> np.ndarray:
        """Clip-based models: re-run the window ending at the newest audio; return finished frames."""
        self._window_audio = np.concatenate([self._window_audio, chunk])
        keep = int(round((self.config.window + self.config.lookahead) * MODEL_RATE))
        keep = max(keep // SAMPLES_PER_FRAME, 1) * SAMPLES_PER_FRAME
        if self._window_audio.size > keep:
            cut = (self._window_audio.size - keep) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
            self._window_audio = self._window_audio[cut:]
            self._window_start += cut
        # the first window of a stream can be shorter than the model accepts: lead it with silence
        pad = -(-max(0, self.model.min_samples - self._window_audio.size) // SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
        with self._inference():
            audio = torch.from_numpy(np.concatenate([np.zeros(pad, np.float32), self._window_audio]))
            pred = self.model(audio.to(self.device).unsqueeze(0),
                              self._identity.to(self.device))[0, pad // SAMPLES_PER_FRAME:].float().cpu().numpy()
        first = self._window_start // SAMPLES_PER_FRAME
        end_sample = self._window_start + self._window_audio.size
        look = 0 if last else int(round(self.config.lookahead * FPS))
        done_until = end_sample // SAMPLES_PER_FRAME - look  # frames before this index are final
        start = self._frame_base + len(self._model_frames)
        new = pred[max(0, start - first): max(0, done_until - first)]
        if self._prev_window is not None and len(new):  # cross-fade with the previous window's guess
            p_first, p_pred = self._prev_window
            idx = np.arange(start, start + len(new)) - p_first
            ok = (idx >= 0) & (idx < len(p_pred))
            w = np.linspace(0.5, 1.0, len(new))[:, None]
            new = new.copy()
            new[ok] = w[ok] * new[ok] + (1 - w[ok]) * p_pred[idx[ok]]
        self._prev_window = (first, pred)
        return new

    # ---- output --------------------------------------------------------------------------------
    def _append_model_frames(self, new: np.ndarray, chunk: np.ndarray) -> None:
        self._model_frames.extend(new)
        self._gate.add_audio(chunk)
        if self.config.liveliness.enabled:
            self.liveliness.add_audio(chunk)

    def _emit(self, end: float | None) -> list[Frame]:
        """Output frames that the known model frames complete. ``end`` (at the end of a stream or clip): where
        the real audio ends, in model frames; every output frame before it is emitted, those in the last model
        frame's span holding its value (no model frame after it to interpolate towards)."""
        frames = []
        rate = self.config.rate
        available = self._frame_base + len(self._model_frames)  # model frames 0..available-1 known
        if end is not None:
            available = min(available, math.ceil(end - 1e-9))
        while True:
            t = self._out_index / rate                      # seconds after t0
            pos = t * FPS
            k0 = int(math.floor(pos + 1e-9))
            need = k0 + 1 if pos - k0 > 1e-9 else k0
            if need >= available and not (end is not None and k0 < available and pos < end - 1e-9):
                break
            frac = pos - k0
            f0 = self._model_frames[k0 - self._frame_base]
            f1 = self._model_frames[min(k0 + 1, available - 1) - self._frame_base]
            frames.append(self._make_frame(self._t0 + t, (1 - frac) * f0 + frac * f1, k0))
            self._out_index += 1
        # bounded memory: keep only frames still needed for interpolation
        drop = max(0, int(math.floor(self._out_index / rate * FPS)) - 1 - self._frame_base)
        if drop:
            del self._model_frames[:drop]
            self._gate.forget_before(self._frame_base + drop)
            self.liveliness.forget_before(self._frame_base + drop)
            self._frame_base += drop
        self._stats.frames += len(frames)
        return frames

    def _make_frame(self, stamp: float, out: np.ndarray, k: int) -> Frame:
        out = out.astype(np.float32)
        if self.config.smoothing and self._smoothed is not None:
            a = self.config.smoothing
            out = a * self._smoothed + (1 - a) * out
        self._smoothed = out
        gate = self._gate.update(k, int(round(self.algorithmic_latency() * FPS)), 1.0 / self.config.rate)
        live, pose = None, np.zeros(len(POSE_NAMES), np.float32)
        if self.config.liveliness.enabled:  # off: the frame is exactly the model's output
            live, pose = self.liveliness.frame(self._t0, k, stamp)
        if self.model.output_kind == "arkit":
            weights = np.clip(out, 0.0, 1.0) * gate
            arkit = weights @ self._to_arkit
            rig_weights = weights @ self._to_rig
            if live is not None:  # the layer adds to the model's ARKit weights; the rig gets the same change
                lively = np.clip(arkit + live, 0.0, 1.0)
                rig_weights = rig_weights + (lively - arkit) @ self._arkit_to_rig
                arkit = lively
            return Frame(stamp, arkit.astype(np.float32), partial(self.rig.offsets, rig_weights), None, pose)
        flame = out * gate  # FLAME output has no eyelids or brows to add to: the layer gives the pose only
        if self._flame is not None:
            offsets = partial(self._flame.offsets, flame, shape=np.asarray(self.rig.identity, np.float32))
        else:
            offsets = partial(np.zeros_like, self.rig.vertices)
        return Frame(stamp, np.zeros(len(self.blendshape_names), np.float32), offsets, flame, pose)
