"""``ostinato devices``: a clear hint without PortAudio, a clear message without devices."""

from __future__ import annotations

import sys

import pytest

from ostinato.__main__ import main


def test_without_sounddevice_prints_install_hint(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    assert main(["devices"]) == 2
    err = capsys.readouterr().err
    assert "sounddevice" in err and "hint:" in err and "libportaudio2" in err


def test_lists_inputs_or_says_there_are_none(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sounddevice")
    code = main(["devices"])
    out = capsys.readouterr()
    if code == 1:
        assert "no audio input devices found" in out.out
    elif code == 0:
        assert "index" in out.out and "mic:INDEX" in out.out
    else:  # a host without any audio subsystem: PortAudio itself fails, reported with a hint
        assert code == 2 and "hint:" in out.err
