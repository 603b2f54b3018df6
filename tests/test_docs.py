"""The README and docs/PROTOCOL.md: what a clone of the project carries,
and that the protocol reference shows the texts the server sends."""

from __future__ import annotations

import os
import re

from pipeserver import errors

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def test_the_readme_links_only_what_a_clone_has() -> None:
    readme = read("README.md")
    assert "../shared" not in readme and "SPEC.md" not in readme
    assert "[docs/PROTOCOL.md](docs/PROTOCOL.md)" in readme
    for target in re.findall(r"\]\(((?:docs|deploy|tap)/[^)#]+)", readme):
        assert os.path.exists(os.path.join(ROOT, target)), target


def test_the_protocol_reference_shows_the_texts_the_server_sends() -> None:
    protocol = read("docs/PROTOCOL.md")
    rejections = [
        errors.reserved_path("/help"),
        errors.content_range("PUT"),
        errors.sender_n_invalid(256),
        errors.receiver_n_invalid(256),
        errors.n_not_positive("0"),
        errors.n_too_large("300", 256),
        errors.established("/p"),
        errors.second_sender("/p"),
        errors.n_mismatch("/p", 2, 1),
        errors.receivers_full(),
        errors.service_worker(),
        errors.method_not_allowed("DELETE"),
        errors.unauthorized(),
        errors.path_too_long(1024),
        errors.header_timeout(),
        errors.headers_too_large(),
        errors.expectation_failed(),
        errors.malformed(),
        errors.internal_error(),
        errors.queue_n(2),
        errors.live_with("n"),
        errors.live_with("queue"),
        errors.live_sender_needed("/p"),
        errors.live_invalid(),
        errors.queue_invalid(),
    ]
    for rejection in rejections:
        for line in rejection.text.splitlines():
            assert f"`{line}`" in protocol, line
    assert f"`{errors.no_sender('/p', 300)}`" in protocol
    assert f"`{errors.not_all_receivers('/p', 300)}`" in protocol
    assert f"`{errors.no_receiver('/p', 300)}`" in protocol


def test_every_test_module_is_type_checked_as_setup_cfg_says() -> None:
    """setup.cfg's [mypy] narrows its checks for tests module by module
    (issue 17, item 5): a new test module missing from its list would be
    checked with the package's strictness, and fail, or worse, a module
    listed no more would be a stale entry. The list is the tests' modules."""
    import configparser
    import glob

    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    listed = next(
        set(name[len("mypy-"):].split(","))
        for name in config.sections()
        if name.startswith("mypy-") and "test_pipe_domain" in name
    )
    tests = os.path.join(ROOT, "tests")
    found = {
        os.path.relpath(path, tests)[: -len(".py")].replace(os.sep, ".")
        for path in glob.glob(os.path.join(tests, "**", "*.py"), recursive=True)
    }
    assert listed == found
    assert not [name for name in config.sections() if config.has_option(name, "ignore_errors")]
