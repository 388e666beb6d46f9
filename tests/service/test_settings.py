"""How the service sizes itself: CPUs from the cgroup quota and affinity, the worker plan."""

from __future__ import annotations

import os

import pytest

from export.runtime import usable_cpus
from service.settings import FrontSettings, Settings, process_plan
from service.supervisor import graceful_timeout


def affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # v2: 1.5 CPUs round up to 2
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
    ],
)
def test_a_cgroup_quota_caps_the_cpus(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert usable_cpus(tmp_path) == min(quota, affinity())


@pytest.mark.parametrize(
    "files",
    [
        {"cpu.max": "max 100000\n"},
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "1"},
        {},
        {"cpu.max": "garbage\n"},
    ],
)
def test_no_quota_leaves_the_affinity(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert usable_cpus(tmp_path) == affinity()


def test_the_inline_plan_never_oversubscribes_unless_asked():
    for cpus in (1, 2, 3, 8, 16):
        plan = process_plan(Settings(mode="inline"), cpus)
        assert plan.workers >= 1 and plan.threads >= 1
        assert plan.workers * plan.threads <= cpus
    assert process_plan(Settings(mode="inline", front={"workers": 3}), 8)[1:] == (3, 2, 2)
    inline = Settings(mode="inline", front={"workers": 2}, engine={"threads": 8})
    assert process_plan(inline, 4)[1:] == (2, 8, 2)  # the operator's call


def test_the_process_plan_gives_the_engine_one_thread_per_call_and_fronts_a_share():
    """One engine: one ONNX and FAISS thread per call (its batcher threads run calls in
    parallel, each with its own session); the fronts mostly wait on sockets."""
    for cpus in (1, 2, 3, 8, 16):
        plan = process_plan(Settings(), cpus)
        assert 1 <= plan.workers <= cpus and plan.threads == 1
        assert plan.sessions == max(2, cpus - plan.workers)  # the CPUs the fronts leave
    assert process_plan(Settings(front={"workers": 3}, engine={"threads": 2, "sessions": 4}), 8)[
        1:
    ] == (3, 2, 4)


@pytest.mark.parametrize(("seconds", "whole"), [(0.5, 1), (0.0, 0), (20.0, 20), (2.1, 3)])
def test_the_graceful_timeout_is_rounded_up_and_never_forever(seconds, whole):
    assert graceful_timeout(Settings(front={"graceful_timeout_s": seconds})) == whole


def test_the_admin_token_is_long_and_may_come_from_a_file(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 32 characters"):
        FrontSettings(admin_token="short")
    secret = tmp_path / "token"
    secret.write_text("x" * 40 + "\n")
    token = FrontSettings(admin_token_file=secret).admin_token
    assert token is not None and token.get_secret_value() == "x" * 40
    with pytest.raises(ValidationError, match="not both"):
        FrontSettings(admin_token="y" * 40, admin_token_file=secret)
    with pytest.raises(ValidationError, match="cannot read it"):
        FrontSettings(admin_token_file=tmp_path / "missing")
    assert FrontSettings(admin_token="", admin_token_file="").admin_token is None


def test_failed_admin_attempts_block_an_address_for_the_rest_of_its_minute(monkeypatch):
    from service.front import state

    now = [1000.0]
    monkeypatch.setattr(state.time, "monotonic", lambda: now[0])
    attempts = state.FailedAttempts(limit=2)
    for _ in range(2):
        assert attempts.retry_after("a") == 0
        attempts.failed("a")
    assert attempts.retry_after("a") == 61 and attempts.retry_after("b") == 0
    now[0] += 59.5
    assert attempts.retry_after("a") == 1
    now[0] += 1
    assert attempts.retry_after("a") == 0  # a new window


def test_each_process_reads_its_group_from_the_environment(monkeypatch):
    monkeypatch.setenv("WALRUS_ENGINE__MAX_BATCH", "7")
    monkeypatch.setenv("WALRUS_FRONT__WORKERS", "3")
    monkeypatch.setenv("WALRUS_LIMITS__K", "12")
    settings = Settings()
    assert (settings.engine.max_batch, settings.front.workers, settings.limits.k) == (7, 3, 12)
    assert settings.engine.sessions == 0 and settings.front.deadline_ms == 10_000


def test_a_misspelt_group_field_is_refused_not_ignored(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("WALRUS_ENGINE__MAX_BACTH", "7")
    with pytest.raises(ValidationError, match="max_bacth"):
        Settings()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("WALRUS_MAX_BATCH", "WALRUS_ENGINE__MAX_BATCH"),
        ("WALRUS_ENGINE", "WALRUS_MODE"),
        ("WALRUS_WORKERS", "WALRUS_FRONT__WORKERS"),
        ("WALRUS_MAX_K", "WALRUS_LIMITS__K"),
    ],
)
def test_a_flat_name_from_before_the_groups_stops_with_its_new_name(monkeypatch, old, new):
    """Silently running on the default would be worse than not starting."""
    from pydantic import ValidationError

    monkeypatch.setenv(old, "1")
    with pytest.raises(ValidationError, match=f"{old} is now {new}"):
        Settings()


def test_every_renamed_name_points_at_a_setting():
    from service.settings import RENAMED, fields

    names = {name for name, _ in fields()}
    assert {f"WALRUS_{new}" for new in RENAMED.values()} <= names
    assert not {f"WALRUS_{old}" for old in RENAMED} & names


def test_the_docs_table_is_printed_from_the_settings():
    from service.settings import reference
    from tests.support.tools import REPO

    text = (REPO / "docs/deployment.md").read_text()
    block = text.split("<!-- settings: python -m service.settings -->\n")[1]
    assert block.split("\n<!-- /settings -->")[0] == reference(), (
        "docs/deployment.md's settings table differs from service/settings.py: paste the "
        "output of `python -m service.settings` between its markers"
    )
