"""src/common/report.py: library code reports through the `street_scene` logger; entry points choose where."""

import contextlib
import io
import logging

from src.common.error_lines import run_command
from src.common.report import note, shown, warn


def test_notes_go_to_stdout_and_warnings_to_stderr_while_shown(capsys):
    with shown():
        note("Run ID: x")
        warn("warning: careful")
    out, err = capsys.readouterr()
    assert (out, err) == ("Run ID: x\n", "warning: careful\n")


def test_notes_follow_a_redirection_made_after_shown_began(capsys):
    # train.log is a tee installed inside the command; --json moves stdout aside: our lines must follow.
    buf = io.StringIO()
    with shown(), contextlib.redirect_stdout(buf):
        note("into the tee")
    assert buf.getvalue() == "into the tee\n" and capsys.readouterr().out == ""


def test_without_an_entry_point_the_application_s_logging_decides(capsys, caplog):
    # (with no handler at all, Python's last-resort handler prints warnings to stderr; pytest installs one)
    with caplog.at_level(logging.INFO, logger="street_scene"):
        note("a note")
        warn("warning: a warning")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("street_scene", "INFO", "a note"), ("street_scene", "WARNING", "warning: a warning")]
    assert capsys.readouterr() == ("", "")


def test_nested_entry_points_keep_the_outer_choice_and_leave_the_logger_as_found(capsys):
    logger = logging.getLogger("street_scene")
    before = (list(logger.handlers), logger.level, logger.propagate)
    with shown("stderr"), shown("stdout"):
        note("once, on stderr")
    assert capsys.readouterr() == ("", "once, on stderr\n")
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_json_commands_get_their_notes_on_stderr(capsys):
    class Args:
        json = True

    def command(args):
        note("Config hash verified: abc")
        print('{"ok": true}')
        return 0

    assert run_command(command, Args()) == 0
    out, err = capsys.readouterr()
    assert out == '{"ok": true}\n' and err == "Config hash verified: abc\n"


def test_the_python_api_shows_the_notes_the_cli_would(capsys, tmp_path):
    from src.common.report import with_notes_shown

    @with_notes_shown
    def entry():
        note("Training completed. Results saved to outputs/x")
        return 7

    assert entry() == 7 and capsys.readouterr().out == "Training completed. Results saved to outputs/x\n"
