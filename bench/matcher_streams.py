"""Deterministic labelled test streams for the pattern matcher (used by ``matcher_eval.py``).

A stream is a sequence of non-repeating filler (spoken sentences with espeak-ng in several
voices and speeds, random harmonic note runs) over a background bed (steady noise or a
non-repeating music-like bed), into which *patterns* (spoken phrases, synthetic jingles) are
placed several times. The first occurrence of a pattern is unaltered; the repeats are
altered per condition: gain, tempo (sox ``tempo``, pitch kept) and additive noise at a given
SNR relative to the repeat; the broadcast conditions add, on top of gain and tempo, a different
music bed 3 dB under the repeat (``music3``), a telephone channel (300-3400 Hz, 8 kHz GSM 06.10
through sox: ``phone``) or a low-rate lossy codec (MP3, MPEG-2 layer III at 32 kbit/s through
libsndfile: ``mp3``). Control streams hold no repeat at all: fillers, hard negatives (phrases
and jingles that resemble the patterns but differ), digital silence, zero padding, DC, mains
hum and a periodic music loop (a loop is not a pattern by the matcher's policy).
Everything derives from one integer seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

__all__ = ["BROADCAST_CONDITIONS", "CONDITIONS", "CORE_CONDITIONS", "Condition", "Occurrence", "Stream", "make_control_stream", "make_stream"]

SAMPLE_RATE = 16000
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3", "en-029", "en-gb-scotland+f2")
WORDS = (
    "red blue green yellow train river mountain window garden silver morning evening quiet "
    "loud table paper market station signal orange winter summer number letter doctor "
    "teacher village forest castle bridge harbor island rocket planet engine marble pocket "
    "candle ticket basket button camera dragon feather hammer jacket kettle ladder mirror "
    "needle pencil rabbit saddle tunnel violin wagon zipper apple butter coffee dinner "
    "falcon ginger honey iron jungle lemon melon nickel oven pepper quartz radio salad "
    "tomato velvet walnut always never slowly quickly gently bravely brightly calmly "
    "leaves arrives opens closes carries follows watches builds paints finds brings keeps "
    "seven eleven twenty ninety hundred thousand north south east west under over before after"
).split()


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """How repeats are altered."""

    name: str
    snr_db: float | None = None
    gain_db: tuple[float, float] = (0.0, 0.0)
    tempo: tuple[float, float] = (1.0, 1.0)
    channel: str = ""  # "", "music" (bed at snr_db under the repeat), "phone" or "mp3"


CONDITIONS = {
    c.name: c
    for c in (
        Condition("clean"),
        Condition("gain", gain_db=(-12.0, 6.0)),
        Condition("tempo", gain_db=(-12.0, 6.0), tempo=(0.95, 1.05)),
        Condition("snr20", 20.0, (-12.0, 6.0), (0.95, 1.05)),
        Condition("snr10", 10.0, (-12.0, 6.0), (0.95, 1.05)),
        Condition("snr5", 5.0, (-12.0, 6.0), (0.95, 1.05)),
        Condition("music3", 3.0, (-12.0, 6.0), (0.95, 1.05), "music"),
        Condition("phone", None, (-12.0, 6.0), (0.95, 1.05), "phone"),
        Condition("mp3", None, (-12.0, 6.0), (0.95, 1.05), "mp3"),
    )
}
#: The conditions a plain ``matcher_eval.py`` run reports (the seeds of earlier runs follow this order).
CORE_CONDITIONS = ("clean", "gain", "tempo", "snr20", "snr10", "snr5")
#: Broadcast channels: ``matcher_eval.py --conditions music3,phone,mp3``.
BROADCAST_CONDITIONS = ("music3", "phone", "mp3")


@dataclasses.dataclass(frozen=True, slots=True)
class Occurrence:
    """One placement of a pattern: ``index`` 0 is the first occurrence."""

    pattern: str
    index: int
    start_s: float
    end_s: float


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Stream:
    """Audio plus labels."""

    name: str
    audio: npt.NDArray[np.float32]
    occurrences: tuple[Occurrence, ...]
    negatives: tuple[tuple[float, float], ...] = ()
    segments: tuple[tuple[str, float, float], ...] = ()

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE


class _Synth:
    def __init__(self, cache: Path) -> None:
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)

    def speak(self, text: str, voice: str, speed: int) -> npt.NDArray[np.float32]:
        key = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:16]
        path = self.cache / f"tts-{key}.wav"
        if not path.exists():
            tmp = path.with_suffix(".tmp.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(tmp), text], check=True)
            tmp.rename(path)
        audio, rate = sf.read(str(path), dtype="float32")
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
        return _trim(audio)

    def tempo(self, audio: npt.NDArray[np.float32], factor: float, speech: bool) -> npt.NDArray[np.float32]:
        if abs(factor - 1.0) < 1e-4:
            return audio
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
            sf.write(str(src), audio, SAMPLE_RATE, subtype="FLOAT")
            subprocess.run(["sox", "-V1", str(src), str(dst), "tempo", "-s" if speech else "-m", f"{factor:.4f}"], check=True)
            out, _ = sf.read(str(dst), dtype="float32")
        return np.asarray(out, dtype=np.float32)

    def channel(self, audio: npt.NDArray[np.float32], kind: str) -> npt.NDArray[np.float32]:
        """``audio`` through a telephone line (``phone``) or a low-rate MP3 (``mp3``), same length."""
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.wav"
            sf.write(str(src), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="FLOAT")
            if kind == "phone":  # band-limit, 8 kHz, GSM full-rate codec (13 kbit/s), and back
                coded = Path(tmp) / "line.gsm"
                subprocess.run(["sox", "-V1", str(src), "-r", "8000", "-c", "1", str(coded), "sinc", "300-3400"], check=True)
                decoded = Path(tmp) / "out.wav"
                subprocess.run(["sox", "-V1", str(coded), "-e", "floating-point", str(decoded)], check=True)
                out, rate = sf.read(str(decoded), dtype="float32")
            elif kind == "mp3":
                coded = Path(tmp) / "out.mp3"
                sf.write(str(coded), np.clip(audio, -1, 1), SAMPLE_RATE, format="MP3", subtype="MPEG_LAYER_III",
                         bitrate_mode="CONSTANT")  # libsndfile default: 32 kbit/s at 16 kHz mono
                out, rate = sf.read(str(coded), dtype="float32")
            else:
                raise ValueError(f"unknown channel {kind!r}")
        out = soxr.resample(np.asarray(out, dtype=np.float32), rate, SAMPLE_RATE).astype(np.float32)
        out = out[: audio.size] if out.size >= audio.size else np.pad(out, (0, audio.size - out.size))
        return out


def _trim(audio: npt.NDArray[np.float32], threshold: float = 1e-3) -> npt.NDArray[np.float32]:
    idx = np.nonzero(np.abs(audio) > threshold)[0]
    return audio[idx[0] : idx[-1] + 1] if idx.size else audio


def _rms(audio: npt.NDArray[np.float32]) -> float:
    loud = audio[np.abs(audio) > 0.1 * np.abs(audio).max()] if audio.size else audio
    return float(np.sqrt(np.mean(loud**2))) if loud.size else 0.0


def _level(audio: npt.NDArray[np.float32], rms: float) -> npt.NDArray[np.float32]:
    return (audio * (rms / max(_rms(audio), 1e-9))).astype(np.float32)


def _note(freq_hz: float, dur_s: float, rng: np.random.Generator, partials: int = 5) -> npt.NDArray[np.float32]:
    n = int(dur_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * k * freq_hz * t + rng.uniform(0, 6.28)) / k**1.2 for k in range(1, partials + 1))
    env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(2.0, 6.0))
    return (tone * env).astype(np.float32)


def _jingle(rng: np.random.Generator, notes: int) -> npt.NDArray[np.float32]:
    base = rng.uniform(180, 400)
    steps = rng.choice([0, 2, 4, 5, 7, 9, 11, 12, 14, 16], size=notes)
    parts = [_note(base * 2 ** (s / 12), rng.choice([0.15, 0.25, 0.35]), rng, int(rng.integers(3, 8))) for s in steps]
    return np.concatenate(parts)


def _music_bed(rng: np.random.Generator, dur_s: float) -> npt.NDArray[np.float32]:
    out = np.zeros(int(dur_s * SAMPLE_RATE) + SAMPLE_RATE, np.float32)
    pos = 0
    while pos < out.size - SAMPLE_RATE:
        d = rng.uniform(0.2, 0.9)
        chord = sum(_note(rng.uniform(100, 600), d + 0.3, rng, 4) for _ in range(int(rng.integers(1, 4))))
        end = min(out.size, pos + chord.size)
        out[pos:end] += chord[: end - pos]
        pos += int(d * SAMPLE_RATE)
    return out[: int(dur_s * SAMPLE_RATE)]


def _noise_bed(rng: np.random.Generator, dur_s: float) -> npt.NDArray[np.float32]:
    white = rng.standard_normal(int(dur_s * SAMPLE_RATE))
    return np.convolve(white, np.ones(4) / 4, mode="same")


_ONSETS = "b d f g h k l m n p r s t v w z ch sh th br pl st tr".split()
_VOWELS = "a e i o u ai ee oo ou ay".split()


def _pseudo_word(rng: np.random.Generator) -> str:
    return "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(int(rng.integers(2, 4))))


def _sentence(rng: np.random.Generator, words: int) -> str:
    """Filler text: pseudo-words from ~5,000 syllables, so no word recurs by chance."""
    return " ".join(_pseudo_word(rng) for _ in range(words))


def _phrase(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, size=words))


def _hard_negative_text(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    for i in range(0, len(words), 2):  # change every other word: no shared stretch > 1 word
        words[i] = str(rng.choice([w for w in WORDS if w != words[i]]))
    return " ".join(words)


class _Builder:
    def __init__(self, synth: _Synth, rng: np.random.Generator, level_rms: float = 0.1) -> None:
        self.synth, self.rng, self.level = synth, rng, level_rms
        self.parts: list[npt.NDArray[np.float32]] = []
        self.labels: list[tuple[str, float, float]] = []
        self.pos = 0

    def add(self, audio: npt.NDArray[np.float32], label: str = "") -> tuple[float, float]:
        start = self.pos / SAMPLE_RATE
        self.parts.append(audio.astype(np.float32))
        self.pos += audio.size
        if label:
            self.labels.append((label, start, self.pos / SAMPLE_RATE))
        return start, self.pos / SAMPLE_RATE

    def pause(self, lo: float = 0.15, hi: float = 0.8) -> None:
        self.add(np.zeros(int(self.rng.uniform(lo, hi) * SAMPLE_RATE), np.float32))

    def filler(self, dur_s: float) -> None:
        end = self.pos + dur_s * SAMPLE_RATE
        while self.pos < end:
            if self.rng.random() < 0.75:
                text = _sentence(self.rng, int(self.rng.integers(3, 8)))
                voice = str(self.rng.choice(VOICES))
                audio = self.synth.speak(text, voice, int(self.rng.integers(130, 190)))
                label = f"speech:{voice}:{text}"
            else:
                audio = _jingle(self.rng, int(self.rng.integers(3, 7)))
                label = "notes"
            self.add(_level(audio, self.level), label)
            self.pause()

    def audio(self) -> npt.NDArray[np.float32]:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def _patterns(synth: _Synth, rng: np.random.Generator, count: int) -> dict[str, tuple[npt.NDArray[np.float32], bool, str]]:
    out = {}
    for i in range(count):
        if i % 2 == 0:
            text = _phrase(rng, int(rng.integers(4, 8)))
            voice = str(rng.choice(VOICES))
            audio = synth.speak(text, voice, int(rng.integers(130, 190)))
            out[f"phrase{i}"] = (audio, True, f"{voice}|{text}")
        else:
            out[f"jingle{i}"] = (_jingle(rng, int(rng.integers(6, 10))), False, "")
    return out


def _add_bed(audio: npt.NDArray[np.float32], rng: np.random.Generator, kind: str, level_rms: float) -> npt.NDArray[np.float32]:
    dur_s = audio.size / SAMPLE_RATE
    bed = _music_bed(rng, dur_s) if kind == "music" else _noise_bed(rng, dur_s)
    bed = bed[: audio.size]
    bed = bed * (level_rms / max(float(np.sqrt(np.mean(bed**2))), 1e-9))
    return (audio + bed.astype(np.float32)).astype(np.float32)


def make_stream(seed: int, condition: Condition, duration_s: float, cache: Path, n_patterns: int = 4, repeats: int = 3) -> Stream:
    """A stream with ``n_patterns`` patterns placed ``repeats`` times each among filler."""
    rng = np.random.default_rng(seed)
    synth = _Synth(cache)
    b = _Builder(synth, rng)
    pats = _patterns(synth, rng, n_patterns)
    slots = [(name, k) for name in pats for k in range(repeats)]
    order = sorted(slots, key=lambda s: (s[1], rng.random()))
    gap_s = max(2.0, duration_s / (len(order) + 1) - 3.0)
    occurrences: list[Occurrence] = []
    noise_spans: list[tuple[int, int, float]] = []
    for name, k in order:
        b.filler(rng.uniform(0.5, 1.5) * gap_s)
        audio, speech, _ = pats[name]
        audio = _level(audio, b.level)
        if k > 0:
            audio = synth.tempo(audio, float(rng.uniform(*condition.tempo)), speech)
            audio = audio * 10 ** (rng.uniform(*condition.gain_db) / 20)
            if condition.channel in ("phone", "mp3"):
                audio = synth.channel(audio, condition.channel)
        start, end = b.add(audio.astype(np.float32), f"{name}#{k}")
        occurrences.append(Occurrence(name, k, start, end))
        if k > 0 and condition.snr_db is not None:
            noise_spans.append((int(start * SAMPLE_RATE), int(end * SAMPLE_RATE), _rms(audio) / 10 ** (condition.snr_db / 20)))
        b.pause()
    b.filler(gap_s)
    out = b.audio()
    for s0, s1, noise_rms in noise_spans:  # noise (or music) from 1 s before to 1 s after, faded in/out
        a0, a1 = max(0, s0 - SAMPLE_RATE), min(out.size, s1 + SAMPLE_RATE)
        if condition.channel == "music":  # a different music bed, snr_db under the repeat
            bed = _music_bed(rng, (a1 - a0) / SAMPLE_RATE + 1.0)[: a1 - a0]
            noise = (bed * (noise_rms / max(_rms(bed), 1e-9))).astype(np.float32)
        else:
            noise = rng.standard_normal(a1 - a0).astype(np.float32) * noise_rms
        fade = np.minimum(1.0, np.minimum(np.arange(a1 - a0), np.arange(a1 - a0)[::-1]) / 800.0)
        out[a0:a1] += noise * fade.astype(np.float32)
    out = _add_bed(out, rng, "music" if seed % 2 else "noise", b.level / 10 ** (25 / 20))
    return Stream(f"{condition.name}-{seed}", np.clip(out, -1, 1).astype(np.float32), tuple(occurrences), (), tuple(b.labels))


def make_control_stream(seed: int, duration_s: float, cache: Path) -> Stream:
    """No repeats: filler, hard negatives of patterns heard once, silence, DC, hum, a loop."""
    rng = np.random.default_rng(seed)
    synth = _Synth(cache)
    b = _Builder(synth, rng)
    negatives: list[tuple[float, float]] = []
    stationary: list[npt.NDArray[np.float32]] = [
        np.zeros(3 * SAMPLE_RATE, np.float32),
        np.full(3 * SAMPLE_RATE, 0.2, np.float32),
        (0.2 * np.sin(2 * np.pi * 50 * np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32),
        (0.2 * np.sin(2 * np.pi * 60 * np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32),
    ]
    while b.pos < duration_s * SAMPLE_RATE:
        b.filler(rng.uniform(15, 40))
        choice = rng.random()
        if choice < 0.5:  # a phrase and, later, a hard negative of it
            text = _phrase(rng, int(rng.integers(4, 8)))
            voice, speed = str(rng.choice(VOICES)), int(rng.integers(130, 190))
            b.add(_level(synth.speak(text, voice, speed), b.level), f"phrase:{text}")
            b.filler(rng.uniform(5, 20))
            neg = _hard_negative_text(text, rng)
            negatives.append(b.add(_level(synth.speak(neg, voice, speed), b.level), f"negative:{neg}"))
        elif choice < 0.8:
            k = int(rng.integers(len(stationary)))
            b.add(stationary[k], ("silence", "dc", "hum50", "hum60")[k])
        else:  # a fresh 8-bar loop each time: a loop heard again later would be a real repeat
            b.add(np.tile(_level(_jingle(rng, 4), b.level), 8), "loop")
        b.pause()
    out = _add_bed(b.audio(), rng, "music" if seed % 2 else "noise", b.level / 10 ** (25 / 20))
    return Stream(f"control-{seed}", np.clip(out, -1, 1).astype(np.float32), (), tuple(negatives), tuple(b.labels))
