import io

from ostinato.progress import ProgressBar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_has_one_line_per_finished_step() -> None:
    out = io.StringIO()
    with ProgressBar(out) as bar:
        for i in range(5):
            bar.update("export", i, 4)
        bar.update("validate", 3, 3)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["export", "validate"]
    assert lines[0].startswith("export: 4/4")


def test_terminal_output_redraws_a_bar() -> None:
    out = _Tty()
    with ProgressBar(out, min_interval_s=0.0) as bar:
        bar.update("encode", 1, 4)
        bar.update("encode", 4, 4)
    text = out.getvalue()
    assert "\r" in text and "[" + "#" * 28 + "]" in text and text.endswith("\n")
