"""The sandbox worker, driven as a real subprocess through the frame protocol."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from wtpy.sandbox._protocol import read_frame_blocking, write_frame_blocking

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CC_ORDER = ["client", "scope", "audience", "context"]
PE_ORDER = ["user", "client", "scope", "audience", "context"]
CC_ARGS: dict[str, Any] = {
    "client": {"id": "client-1", "name": "Test", "metadata": {"tier": "gold"}},
    "scope": ["read"],
    "audience": "https://api.example.com",
    "context": {"ip": "127.0.0.1", "webtask": {"secrets": {"k": "v"}, "meta": {}}},
}
PE_ARGS: dict[str, Any] = {**CC_ARGS, "user": {"id": "user-1", "email": "u@example.com"}}
FILENAME = "<webtask default/myrule>"
LIMITS = {"cpu_seconds": 10, "max_log_lines": 1000, "max_log_bytes": 65536}


class Worker:
    """One `python -I -m wtpy.sandbox._worker` process (as the pool starts it)."""

    _ids = itertools.count(1)

    def __init__(
        self,
        memory_mb: int | None = None,
        *,
        argv: list[str] | None = None,
        stderr: Any = subprocess.DEVNULL,
    ) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if memory_mb is not None:
            env["WTPY_WORKER_MEMORY_MB"] = str(memory_mb)
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-I", "-m", "wtpy.sandbox._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        frame = read_frame_blocking(self.proc.stdout)  # type: ignore[arg-type]
        assert frame is not None, f"worker exited: {self.proc.wait(5)}"
        return frame

    def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The reply to `frame`; lines sent while the hook ran ("logs" frames) are put in
        front of its `logs`, and the batches are kept in `reply["live"]`."""
        assert self.proc.stdin is not None
        write_frame_blocking(self.proc.stdin, frame)  # type: ignore[arg-type]
        live = []
        reply = self.read()
        while reply.get("op") == "logs":
            assert reply["id"] == frame["id"]
            live.append(reply["logs"])
            reply = self.read()
        assert reply["id"] == frame["id"]
        if live:
            reply["logs"] = [line for batch in live for line in batch] + reply.get("logs", [])
            reply["live"] = live
        return reply

    def run(
        self,
        code: str | None,
        args: dict[str, Any] | None = None,
        order: list[str] | None = None,
        *,
        key: str | None = None,
        filename: str = FILENAME,
        **limits: Any,
    ) -> dict[str, Any]:
        if code is not None:
            code = textwrap.dedent(code)
        if key is None:
            assert code is not None
            key = hashlib.sha256(code.encode()).hexdigest()
        frame = {
            "id": next(self._ids),
            "op": "run",
            "key": key,
            "code": code,
            "filename": filename,
            "args": CC_ARGS if args is None else args,
            "order": CC_ORDER if order is None else order,
            "limits": {**LIMITS, **limits},
        }
        return self.request(frame)

    def alive(self) -> bool:
        return self.request({"id": next(self._ids), "op": "ping"})["ok"] is True

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


@pytest.fixture
def own_worker() -> Iterator[Worker]:
    """A worker of the test's own, for tests that exhaust or kill it."""
    w = Worker(memory_mb=256)
    yield w
    w.close()


def result(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return orjson.loads(reply["result"]) if "result" in reply else None


def error(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"] is False, reply
    return reply["error"]


def compile_error(reply: dict[str, Any]) -> str:
    err = error(reply)
    assert err["name"] == "CompileError"
    assert err["message"] == "Unable to compile the extensibility code as python"
    return err["error_description"]


# ----------------------------------------------------------------------------- start-up


def test_ready_frame_and_ping(worker: Worker) -> None:
    assert worker.ready == {"ready": True, "pid": worker.proc.pid}
    assert worker.alive()


def test_rlimits_applied(own_worker: Worker) -> None:
    limits = Path(f"/proc/{own_worker.proc.pid}/limits").read_text()
    rows = {line[:26].strip(): line[26:].split() for line in limits.splitlines()[1:]}
    # soft = the worker's memory; hard leaves room for orjson's reservations (SERIALIZE_HEADROOM)
    assert rows["Max address space"][:2] == [
        str(256 * 1024 * 1024),
        str(256 * 1024 * 1024 + 8 * 1024**3),
    ]
    assert rows["Max file size"][:2] == ["0", "0"]
    assert rows["Max core file size"][:2] == ["0", "0"]


def test_protocol_fds_moved_off_stdio(own_worker: Worker) -> None:
    fd0 = os.readlink(f"/proc/{own_worker.proc.pid}/fd/0")
    fd1 = os.readlink(f"/proc/{own_worker.proc.pid}/fd/1")
    fd2 = os.readlink(f"/proc/{own_worker.proc.pid}/fd/2")
    assert fd0 == "/dev/null"
    assert fd1 == fd2


# ----------------------------------------------------------------------------- exchanges


def test_sample_rule_client_credentials_order(worker: Worker) -> None:
    reply = worker.run((SAMPLES / "myrule.py").read_text())
    assert result(reply) == {"https://foo.com/claim": "bar", "scope": ["read", "extra"]}
    assert reply["logs"] == []


def test_sample_rule_password_order(worker: Worker) -> None:
    reply = worker.run((SAMPLES / "password_rule.py").read_text(), PE_ARGS, PE_ORDER)
    assert result(reply) == {"https://foo.com/claim": "bar", "scope": ["read", "extra"]}


def test_five_parameter_hook_bound_by_name_in_password_order(worker: Worker) -> None:
    code = """
    def hook(client, scope, audience, context, cb):
        cb(None, {"client": client["id"], "scope": scope, "audience": audience,
                  "ip": context["ip"]})
    """
    assert result(worker.run(code, PE_ARGS, PE_ORDER)) == {
        "client": "client-1", "scope": ["read"], "audience": "https://api.example.com",
        "ip": "127.0.0.1",
    }  # fmt: skip


def test_unknown_parameter_names_bind_positionally(worker: Worker) -> None:
    code = """
    def hook(a, b, c, d, callback):
        callback(None, [a["id"], b, c])
    """
    assert result(worker.run(code)) == ["client-1", ["read"], "https://api.example.com"]


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        ("*args", "client-1 4"),
        ("**kwargs", "client-1 4"),
        ("client, scope, audience, context, cb, /", "client-1 4"),
    ],
)
def test_variadic_and_positional_only_hooks(worker: Worker, signature: str, expected: str) -> None:
    body = {
        "*args": "return args[0]['id'] + ' ' + str(len(args))",
        "**kwargs": "return kwargs['client']['id'] + ' ' + str(len(kwargs))",
        "client, scope, audience, context, cb, /": "cb(None, client['id'] + ' ' + str(len(scope) + 3))",
    }[signature]
    assert result(worker.run(f"def hook({signature}):\n    {body}\n")) == expected


def test_return_style_result_and_logs(worker: Worker) -> None:
    reply = worker.run((SAMPLES / "return_style.py").read_text())
    assert result(reply) == {"https://example.com/tier": "gold"}
    assert [(e["level"], e["message"]) for e in reply["logs"]] == [
        ("info", "issuing token for client-1 at https://api.example.com")
    ]
    assert isinstance(reply["logs"][0]["time"], float)


def test_return_none_has_no_result_key(worker: Worker) -> None:
    reply = worker.run("def hook(client, scope, audience, context):\n    return None\n")
    assert reply["ok"] is True and "result" not in reply


def test_cb_none_has_no_result_key(worker: Worker) -> None:
    reply = worker.run("def hook(client, scope, audience, context, cb):\n    cb(None)\n")
    assert reply["ok"] is True and "result" not in reply


def test_callback_style_hook_may_just_return(worker: Worker) -> None:
    code = "def hook(client, scope, audience, context, cb):\n    return {'returned': True}\n"
    assert result(worker.run(code)) == {"returned": True}


def test_cb_called_twice_first_wins_with_warning(worker: Worker) -> None:
    code = """
    def hook(client, scope, audience, context, cb):
        cb(None, {"first": 1})
        cb(None, {"second": 2})
        cb(ValueError("late"))
    """
    reply = worker.run(code)
    assert result(reply) == {"first": 1}
    warns = [e for e in reply["logs"] if e["level"] == "warn"]
    assert len(warns) == 2 and "more than once" in warns[0]["message"]


def test_cb_error_keeps_class_name_and_call_site(worker: Worker) -> None:
    code = """
    def hook(client, scope, audience, context, cb):
        if "admin" not in scope:
            cb(InvalidScopeError("scope admin is required"))
    """
    err = error(worker.run(code))
    assert err["name"] == "InvalidScopeError"
    assert err["message"] == "scope admin is required"
    assert f'File "{FILENAME}", line 4, in hook' in err["stack"]


def test_cb_string_error_is_named_error(worker: Worker) -> None:
    err = error(worker.run("def hook(client, scope, audience, context, cb):\n    cb('nope')\n"))
    assert (err["name"], err["message"]) == ("Error", "nope")


def test_raise_after_cb_keeps_cb_answer(worker: Worker) -> None:
    code = """
    def hook(client, scope, audience, context, cb):
        cb(None, "ok")
        raise ValueError("after")
    """
    reply = worker.run(code)
    assert result(reply) == "ok"
    assert any(
        "raised ValueError after calling its callback" in e["message"] for e in reply["logs"]
    )


def test_hook_error_classes_are_injected(worker: Worker) -> None:
    for cls in (
        "ExtensibilityUserError",
        "InvalidRequestError",
        "InvalidScopeError",
        "ServerError",
    ):
        code = f"def hook(client, scope, audience, context):\n    raise {cls}('x')\n"
        assert error(worker.run(code))["name"] == cls
    subclass = "def hook(client, scope, audience, context):\n    return issubclass(ServerError, ExtensibilityUserError)\n"
    assert result(worker.run(subclass)) is True


# ----------------------------------------------------------------------------- errors


def test_raise_value_error_stack_shows_only_hook_frames(worker: Worker) -> None:
    code = """
    import json

    def helper(x):
        raise ValueError("boom " + x)

    def hook(client, scope, audience, context):
        return helper(json.dumps(1))
    """
    err = error(worker.run(code))
    assert (err["name"], err["message"]) == ("ValueError", "boom 1")
    assert err["stack"].splitlines() == [
        "Traceback (most recent call last):",
        f'  File "{FILENAME}", line 8, in hook',
        "    return helper(json.dumps(1))",
        f'  File "{FILENAME}", line 5, in helper',
        '    raise ValueError("boom " + x)',
        "ValueError: boom 1",
    ]
    assert "/" not in err["stack"].replace(FILENAME, "")


def test_error_inside_stdlib_has_no_server_paths(worker: Worker) -> None:
    code = (
        "import json\n\ndef hook(client, scope, audience, context):\n    return json.loads('{')\n"
    )
    err = error(worker.run(code))
    assert err["name"] == "JSONDecodeError"
    assert "line 4, in hook" in err["stack"]
    assert "/" not in err["stack"].replace(FILENAME, "")
    assert ".py" not in err["stack"]


def test_filename_follows_the_request_not_the_cache(worker: Worker) -> None:
    code = "def hook(client, scope, audience, context):\n    raise ValueError('x')\n"
    worker.run(code, filename="<webtask tenant-a/rule>")
    err = error(worker.run(code, filename="<webtask tenant-b/rule>"))
    assert "tenant-b/rule" in err["stack"] and "tenant-a" not in err["stack"]


def test_non_serialisable_result(worker: Worker) -> None:
    err = error(worker.run("def hook(client, scope, audience, context):\n    return {1, 2}\n"))
    assert err["message"] == "Error when JSON serializing the result of the extension point"
    assert "set" in err["stack"]


def test_module_level_error_is_an_error_envelope(worker: Worker) -> None:
    code = "x = 1 // 0\n\ndef hook(client, scope, audience, context):\n    return 1\n"
    err = error(worker.run(code))
    assert err["name"] == "ZeroDivisionError"
    assert "line 1, in <module>" in err["stack"]


def test_worker_survives_base_exceptions_from_hook(worker: Worker) -> None:
    for cls in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        code = f"def hook(client, scope, audience, context):\n    raise {cls}('bye')\n"
        err = error(worker.run(code))
        assert (err["name"], err["message"]) == (cls, "bye")
    assert worker.alive()


# ----------------------------------------------------------------------------- compile errors


def test_syntax_error_names_the_line(worker: Worker) -> None:
    code = "def hook(client, scope, audience, context):\n    x = 1\n    return (x +\n"
    description = compile_error(worker.run(code))
    assert description.startswith("Line 3: SyntaxError:")


def test_no_hook_function(worker: Worker) -> None:
    description = compile_error(worker.run("x = 1\n"))
    assert description == "The extensibility code must define a function named hook"


def test_two_public_functions_without_hook(worker: Worker) -> None:
    code = "def one(a):\n    return 1\n\ndef two(a):\n    return 2\n"
    description = compile_error(worker.run(code))
    assert "named hook" in description and "one, two" in description


def test_single_public_function_is_the_hook(worker: Worker) -> None:
    code = "def rule(client, scope, audience, context):\n    return audience\n"
    assert result(worker.run(code)) == "https://api.example.com"


def test_hook_that_is_not_a_function(worker: Worker) -> None:
    description = compile_error(worker.run("hook = 5\n"))
    assert "hook is a int, not a function" in description


@pytest.mark.parametrize("module", ["os", "sys", "subprocess", "socket", "os.path", "importlib"])
def test_import_outside_allow_list_refused_at_compile(worker: Worker, module: str) -> None:
    code = f"def hook(client, scope, audience, context):\n    import {module}\n    return 1\n"
    assert compile_error(worker.run(code)).startswith(
        f"Line 2: import of module '{module}' is not allowed"
    )


def test_compile_failure_is_cached_for_code_null(worker: Worker) -> None:
    key = "compile-failure-cached"
    compile_error(worker.run("def hook(:\n", key=key))
    assert compile_error(worker.run(None, key=key)).startswith("Line 1: SyntaxError")


def test_need_code_for_unknown_key(worker: Worker) -> None:
    reply = worker.run(None, key="never-sent")
    assert set(reply) == {"id", "need_code"} and reply["need_code"] is True


# ----------------------------------------------------------------------------- logs


def test_print_and_log_object(worker: Worker) -> None:
    code = """
    def hook(client, scope, audience, context):
        print("a", 1, sep="-")
        log.info("i")
        log.warn("w", 2)
        log.error("e")
    """
    logs = worker.run(code)["logs"]
    assert [(e["level"], e["message"]) for e in logs] == [
        ("info", "a-1"), ("info", "i"), ("warn", "w 2"), ("error", "e"),
    ]  # fmt: skip


def test_log_line_cap_appends_marker(worker: Worker) -> None:
    code = (
        "def hook(client, scope, audience, context):\n    for i in range(50):\n        print(i)\n"
    )
    logs = worker.run(code, max_log_lines=5)["logs"]
    assert [e["message"] for e in logs[:5]] == ["0", "1", "2", "3", "4"]
    assert len(logs) == 6
    assert logs[-1]["level"] == "warn" and logs[-1]["message"].startswith("[wtpy] output truncated")


def test_log_byte_cap_keeps_head_and_marker(worker: Worker) -> None:
    code = "def hook(client, scope, audience, context):\n    print('x' * 100)\n    print('y')\n"
    logs = worker.run(code, max_log_bytes=30)["logs"]
    assert logs[0]["message"] == "x" * 30
    assert len(logs) == 2 and logs[1]["message"].startswith("[wtpy] output truncated")


# ----------------------------------------------------------------------------- isolation


def test_state_does_not_survive_between_invocations(worker: Worker) -> None:
    code = """
    seen = []

    def hook(client, scope, audience, context):
        seen.append(1)
        return len(seen)
    """
    first = worker.run(code, key="state-key")
    again = worker.run(None, key="state-key")  # cached compile, fresh globals
    assert (result(first), result(again)) == (1, 1)


def test_fresh_globals_across_keys(worker: Worker) -> None:
    writer = "import json\nSECRET = 'tenant-a'\n\ndef hook(client, scope, audience, context):\n    return SECRET\n"
    reader = "def hook(client, scope, audience, context):\n    return SECRET\n"
    assert result(worker.run(writer)) == "tenant-a"
    err = error(worker.run(reader))
    assert (err["name"], err["message"]) == ("NameError", "name 'SECRET' is not defined")


def test_module_constants_and_random_state_are_not_shared(worker: Worker) -> None:
    tamper = """
    import hashlib
    import random
    from hashlib import algorithms_available

    def hook(client, scope, audience, context):
        algorithms_available.add("tampered")
        hashlib.algorithms_available.clear()
        random.seed(1)
        return len(hashlib.algorithms_available)
    """
    check = """
    import hashlib
    import random

    def hook(client, scope, audience, context):
        return ["sha256" in hashlib.algorithms_available, "tampered" in hashlib.algorithms_available,
                random.random()]
    """
    assert result(worker.run(tamper)) > 5  # a copy was cleared, not the module's set
    assert result(worker.run(check))[:2] == [True, False]
    assert result(worker.run(check))[2] != 0.13436424411240122  # random.seed(1); random.random()


def test_random_state_is_fresh_however_the_hook_imports_it(worker: Worker) -> None:
    seeded = "import random\n\ndef hook(client, scope, audience, context):\n    random.seed(1)\n    return 0\n"
    readers = [
        "def hook(client, scope, audience, context):\n    import random\n    return random.random()\n",
        "from random import random\n\ndef hook(client, scope, audience, context):\n    return random()\n",
        "import json, random\n\ndef hook(client, scope, audience, context):\n    return random.random()\n",
    ]
    values = []
    for reader in readers:
        assert result(worker.run(seeded)) == 0
        values.append(result(worker.run(reader)))
    assert (
        0.13436424411240122 not in values and len(set(values)) == 3
    )  # random.seed(1); random.random()


def test_cached_gauss_value_does_not_carry_over(worker: Worker) -> None:
    """random.gauss() keeps its second value in the instance (gauss_next): the reseed
    (random.seed, not the C-level seed alone) drops it too."""
    import random

    first = "import random\n\ndef hook(client, scope, audience, context):\n    random.seed(1)\n    return random.gauss(0, 1)\n"
    second = "import random\n\ndef hook(client, scope, audience, context):\n    return random.gauss(0, 1)\n"
    seeded = random.Random(1)
    assert result(worker.run(first)) == seeded.gauss(0, 1)
    assert result(worker.run(second)) != seeded.gauss(0, 1)


def test_hook_seed_holds_across_its_own_imports(worker: Worker) -> None:
    """The reseed happens once, at the invocation's first import: a later `import random`
    (in a function, say) does not undo the hook's own random.seed()."""
    code = """
    import random

    def draw():
        import random as again
        from random import random as r
        return [again.random(), r()]

    def hook(client, scope, audience, context):
        random.seed(7)
        return draw()
    """
    import random

    expected = random.Random(7)
    assert result(worker.run(code)) == [expected.random(), expected.random()]


def _in_process_run(code: str) -> dict[str, Any]:
    from wtpy.sandbox import _worker

    frame = {"id": 1, "op": "run", "key": textwrap.dedent(code), "code": textwrap.dedent(code),
             "args": CC_ARGS, "order": CC_ORDER, "limits": {"cpu_seconds": None}}  # fmt: skip
    return _worker.Worker(memory_mb=0).handle(frame)


def test_only_imports_that_reach_random_state_reseed_it() -> None:
    """In process, to watch the `random` module's state itself: an invocation that cannot
    reach it leaves it alone (the cost is skipped), one that imports `random` or `uuid`
    (uuid1 and getnode draw from it) gets fresh state."""
    import random

    seed = "import random\n\ndef hook(client, scope, audience, context):\n    random.seed(1)\n"
    assert _in_process_run(seed)["ok"] is True
    state = random.getstate()
    assert _in_process_run(
        "import json\n\ndef hook(client, scope, audience, context):\n    return 1\n"
    )["ok"]
    assert random.getstate() == state
    for module in ("uuid", "random"):
        assert _in_process_run(seed)["ok"] is True
        state = random.getstate()
        assert _in_process_run(
            f"import {module}\n\ndef hook(client, scope, audience, context):\n    return 1\n"
        )["ok"]
        assert random.getstate() != state, module


def test_no_other_allowed_module_reaches_random_state() -> None:
    """RANDOM_STATE_MODULES lists every allowed module through which a hook reaches the
    `random` module's shared state: no other one uses `random` in its source, nor exposes
    it (or uuid) through public attributes."""
    import random
    import re
    import types

    from wtpy.sandbox._hook import ALLOWED_MODULES, RANDOM_STATE_MODULES
    from wtpy.sandbox._rp_guards import _VIEWS, guarded_getattr

    assert RANDOM_STATE_MODULES <= ALLOWED_MODULES
    others = {
        name: module
        for name, module in sys.modules.items()
        if name.partition(".")[0] in ALLOWED_MODULES - RANDOM_STATE_MODULES
    }
    views = {name: view for name, view in _VIEWS.items() if name in others}
    uses_random = re.compile(r"^\s*(import|from)\s+random\b|\brandom\.[a-z_]+\(", re.MULTILINE)
    for name, module in others.items():
        path = getattr(module, "__file__", None) or ""
        if path.endswith(".py"):
            assert not uses_random.search(Path(path).read_text(encoding="utf-8")), name

    def reached(roots: list[tuple[str, Any]]) -> list[str]:
        def is_random_state(obj: Any) -> bool:
            if (
                obj is random
                or obj is random._inst
                or getattr(obj, "__self__", None) is random._inst
            ):
                return True
            return obj is _VIEWS["random"] or obj is _VIEWS["uuid"]

        found, seen, keep = [], set(), []  # keep: ids stay unique while we walk
        frontier = roots
        for _ in range(4):  # attribute chains of up to 4 names, public ones only
            following = []
            for path, obj in frontier:
                if id(obj) in seen:
                    continue
                seen.add(id(obj))
                keep.append(obj)
                for attribute in dir(obj):
                    if attribute.startswith("_"):
                        continue
                    try:
                        value = guarded_getattr(obj, attribute)  # what a hook reaches
                    except Exception:
                        continue
                    if is_random_state(value):
                        found.append(f"{path}.{attribute}")
                    else:
                        following.append((f"{path}.{attribute}", value))
            frontier = following
        return found

    assert "random.random" in reached([("random", _VIEWS["random"])])  # the walk does find it
    assert reached(sorted(views.items())) == []
    assert isinstance(random, types.ModuleType)


def test_future_import_and_submodules_allowed(worker: Worker) -> None:
    code = """
    from __future__ import annotations
    import collections.abc
    import collections.abc as cabc
    from collections import abc

    def hook(client: dict, scope: list, audience: str, context: dict) -> list:
        return [isinstance(client, collections.abc.Mapping), cabc is abc, isinstance(scope, abc.Sequence)]
    """
    assert result(worker.run(code)) == [True, True, True]


@pytest.mark.parametrize("module", ["json.decoder", "json.tool", "json.scanner", "collections.abc.sys", "re.functools",
                                    "re._parser", "datetime.sys", "encodings", "string.re", "typing"])  # fmt: skip
def test_submodules_outside_the_allow_list_refused_at_compile(worker: Worker, module: str) -> None:
    for statement in (f"import {module}", f"import {module} as m", f"from {module} import x"):
        code = f"{statement}\n\ndef hook(client, scope, audience, context):\n    return 1\n"
        assert f"import of module {module!r} is not allowed" in compile_error(worker.run(code)), (
            statement
        )


def test_private_submodule_import_refused(worker: Worker) -> None:
    code = "import re._parser as p\n\ndef hook(client, scope, audience, context):\n    return 1\n"
    assert "import of module 're._parser' is not allowed" in compile_error(worker.run(code))


def test_hook_classes_are_writable_but_not_dunders(worker: Worker) -> None:
    code = """
    class Box:
        def __init__(self):
            self.value = 1

    def hook(client, scope, audience, context):
        box = Box()
        box.value = box.value + 1
        try:
            setattr(box, "__class__", Box)
        except AttributeError as exc:
            return [box.value, str(exc)]
    """
    assert result(worker.run(code)) == [2, "setattr of '__class__' is not allowed"]


# ----------------------------------------------------------------------------- escapes


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__builtins__", '"__builtins__" is an invalid variable name'),
        ("hook.__globals__", '"__globals__" is an invalid attribute name'),
        ("().__class__.__base__.__subclasses__()", '"__class__" is an invalid attribute name'),
        ("(i for i in []).gi_frame", '"gi_frame" is a restricted name'),
        ("exec('1')", "Exec calls are not allowed"),
        ("eval('1')", "Eval calls are not allowed"),
    ],
)
def test_escapes_refused_at_compile(worker: Worker, expression: str, reason: str) -> None:
    code = f"def hook(client, scope, audience, context):\n    return {expression}\n"
    assert reason in compile_error(worker.run(code))


@pytest.mark.parametrize(
    ("body", "name", "message"),
    [
        ("return getattr(cb, '__globals__')", "AttributeError", "starts with \"_\""),
        ("return getattr(getattr((), 'gi_frame', 1), 'x')", "AttributeError", "restricted name"),
        ("return '{0.__class__}'.format(1)", "NotImplementedError", "format*() methods of `str`"),
        ("return str.format('{0.__class__}', 1)", "NotImplementedError", "format*() methods"),
        ("import collections\n    return collections.UserString('{0.__class__}').format(1)",
         "NotImplementedError", "format*() methods"),
        ("return open('/etc/passwd').read()", "NameError", "name 'open' is not defined"),
        ("e = eval\n    return e", "NameError", "name 'eval' is not defined"),
        ("import datetime\n    return datetime.sys", "AttributeError", "module 'sys' is not available"),
        ("import uuid\n    return uuid.os.system('id')", "AttributeError", "module 'os' is not available"),
        ("from uuid import os\n    return 1", "ImportError", "cannot import name 'os'"),
        ("import re\n    return re.enum", "AttributeError", "module 'enum' is not available"),
        ("import functools\n    return functools.update_wrapper", "AttributeError", "not available"),
        ("from functools import singledispatch\n    return 1", "ImportError", "singledispatch"),
        ("from string import Formatter\n    return 1", "ImportError", "Formatter"),
    ],
)  # fmt: skip
def test_escapes_refused_at_run_time(worker: Worker, body: str, name: str, message: str) -> None:
    code = f"def hook(client, scope, audience, context, cb):\n    {body}\n"
    err = error(worker.run(code))
    assert err["name"] == name and message in err["message"], err


def test_setattr_on_allowed_module_refused_and_harmless(worker: Worker) -> None:
    code = """
    import json

    def hook(client, scope, audience, context):
        out = []
        try:
            json.dumps = lambda x: "pwned"
        except TypeError as exc:
            out.append(str(exc))
        try:
            setattr(json, "loads", None)
        except TypeError as exc:
            out.append(str(exc))
        return out
    """
    assert result(worker.run(code)) == ["attribute-less object (assign or del)"] * 2
    check = (
        "import json\n\ndef hook(client, scope, audience, context):\n    return json.dumps([1])\n"
    )
    assert result(worker.run(check)) == "[1]"


def test_allowed_modules_work(worker: Worker) -> None:
    code = """
    import base64, collections, datetime, hashlib, hmac, itertools, json, math, random, re
    import string, time, uuid
    from functools import reduce

    def hook(client, scope, audience, context):
        return [
            base64.b64encode(b"hi").decode(),
            collections.Counter("aab")["a"],
            datetime.date(2020, 1, 2).isoformat(),
            hashlib.sha256(b"x").hexdigest()[:8],
            hmac.new(b"k", b"m", "sha256").hexdigest()[:8],
            list(itertools.islice(itertools.count(), 3)),
            math.floor(2.5),
            re.sub("a", "b", "aa"),
            string.ascii_lowercase[:3],
            reduce(lambda a, b: a + b, [1, 2, 3]),
            len(str(uuid.uuid4())),
            sorted({3, 1, 2}),
            isinstance(time.time(), float) and isinstance(random.random(), float),
        ]
    """
    assert result(worker.run(code)) == [
        "aGk=", 2, "2020-01-02", hashlib.sha256(b"x").hexdigest()[:8],
        hmac.new(b"k", b"m", "sha256").hexdigest()[:8], [0, 1, 2], 2, "bb", "abc", 6, 36,
        [1, 2, 3], True,
    ]  # fmt: skip


# ----------------------------------------------------------------------------- resources


def test_deep_recursion_is_an_error(worker: Worker) -> None:
    code = """
    def down(n):
        return down(n + 1)

    def hook(client, scope, audience, context):
        return down(0)
    """
    err = error(worker.run(code))
    assert err["name"] == "RecursionError"
    assert "Previous line repeated" in err["stack"]
    assert worker.alive()


def test_memory_bomb_is_an_error_and_asks_for_recycle(own_worker: Worker) -> None:
    code = """
    def hook(client, scope, audience, context):
        hog = []
        while True:
            hog.append("x" * 10_000_000)
    """
    reply = own_worker.run(code)
    assert error(reply)["name"] == "MemoryError"
    assert reply["recycle"] is True
    # The memory is released: the same worker still answers.
    assert (
        result(own_worker.run("def hook(client, scope, audience, context):\n    return 1\n")) == 1
    )


def test_cpu_budget_kills_a_runaway_hook(own_worker: Worker) -> None:
    code = "def hook(client, scope, audience, context):\n    while True:\n        pass\n"
    assert own_worker.proc.stdin is not None
    write_frame_blocking(
        own_worker.proc.stdin,  # type: ignore[arg-type]
        {"id": 1, "op": "run", "key": "spin", "code": code, "filename": FILENAME,
         "args": CC_ARGS, "order": CC_ORDER, "limits": {**LIMITS, "cpu_seconds": 1}},
    )  # fmt: skip
    started = time.monotonic()
    assert own_worker.proc.wait(15) == -signal.SIGXCPU
    assert time.monotonic() - started < 10


def test_leftover_generators_are_closed_before_the_answer(own_worker: Worker) -> None:
    """A suspended generator's finally runs inside its own invocation (it logs there), and
    one that cannot be closed makes the worker ask to be replaced."""
    closing = """
    def gen():
        try:
            yield 1
        finally:
            log.info('closed in my own invocation')

    def hook(client, scope, audience, context):
        box = []
        g = gen()
        next(g)
        box.append(g)
        box.append(box)
        return 1
    """
    reply = own_worker.run(closing)
    assert result(reply) == 1 and "recycle" not in reply
    assert [entry["message"] for entry in reply["logs"]] == ["closed in my own invocation"]
    stubborn = """
    def gen():
        while True:
            try:
                yield 1
            except GeneratorExit:
                pass

    KEEP = []

    def hook(client, scope, audience, context):
        g = gen()
        next(g)
        KEEP.append(g)
        return 2
    """
    reply = own_worker.run(stubborn)
    assert result(reply) == 2 and reply["recycle"] is True


def test_an_internal_error_is_answered_even_when_stderr_is_a_file(tmp_path: Path) -> None:
    """A bug in the worker (here: a patched _run) answers an error and asks to be replaced,
    also when its stderr is a regular file it may not write (RLIMIT_FSIZE is 0)."""
    launcher = (
        "import sys, wtpy.sandbox._worker as w\n"
        "def broken(self, job):\n    raise ZeroDivisionError('worker bug')\n"
        "w.Worker._run = broken\nsys.exit(w.main())\n"
    )
    with open(tmp_path / "stderr.log", "wb") as stderr:
        worker = Worker(argv=[sys.executable, "-I", "-c", launcher], stderr=stderr)
    try:
        assert worker.ready["ready"] is True
        reply = worker.run("def hook(client, scope, audience, context):\n    return 1\n")
        assert reply["ok"] is False and reply["recycle"] is True
        assert reply["error"]["message"] == "internal worker error: ZeroDivisionError"
    finally:
        worker.close()


def test_a_slow_hook_s_lines_are_sent_while_it_runs(worker: Worker) -> None:
    reply = worker.run(
        """
        import time
        def hook(client, scope, audience, context):
            log.info('first')
            time.sleep(0.3)
            print('second')
            time.sleep(0.3)
            log.warn('third')
            return 'done'
        """
    )
    assert reply["ok"] is True
    assert [line["message"] for line in reply["logs"]] == ["first", "second", "third"]
    # Each line had waited 0.3 s when the next one came: sent on then, one batch each;
    # the last one travels with the answer.
    assert [[line["message"] for line in batch] for batch in reply["live"]] == [
        ["first"],
        ["second"],
    ]


def test_a_line_is_sent_on_while_the_hook_goes_on_without_logging(worker: Worker) -> None:
    started = time.monotonic()
    reply = worker.run(
        "import time\ndef hook(client, scope, audience, context):\n    log.info('only')\n    time.sleep(0.5)\n"
    )
    assert reply["live"] == [reply["logs"]] and reply["logs"][0]["message"] == "only"
    assert time.monotonic() - started >= 0.5  # the timer's signal did not cut the sleep short


def test_a_quick_hook_s_lines_all_come_with_the_answer(worker: Worker) -> None:
    reply = worker.run(
        "def hook(client, scope, audience, context):\n    for i in range(50):\n        log.info(i)\n"
    )
    assert "live" not in reply and len(reply["logs"]) == 50


def test_the_caps_count_lines_already_sent(worker: Worker) -> None:
    reply = worker.run(
        """
        import time
        def hook(client, scope, audience, context):
            log.info('a')
            time.sleep(0.15)
            for word in ['b', 'c', 'd', 'e']:
                log.info(word)
        """,
        max_log_lines=3,
    )
    messages = [line["message"] for line in reply["logs"]]
    assert messages[:3] == ["a", "b", "c"] and messages[3].startswith("[wtpy] output truncated")
    assert len(messages) == 4 and reply["live"] == [[reply["logs"][0]]]


def test_lone_surrogates_in_logs_and_errors_do_not_kill_the_worker(worker: Worker) -> None:
    logged = worker.run(
        "def hook(client, scope, audience, context):\n    log.info('x' + chr(0xd800))\n    return 1\n"
    )
    assert logged["ok"] is True and logged["logs"][0]["message"] == "x?"
    raised = worker.run(
        "def hook(client, scope, audience, context):\n    raise ValueError('y' + chr(0xdfff))\n"
    )
    assert raised["ok"] is False and raised["error"]["message"] == "y?"
    assert worker.alive()


def test_the_zygote_imports_no_web_stack() -> None:
    """Starting the zygote (and so every worker forked from it) loads the sandbox package
    only: not the server (wtpy.runtime/server/storage), its web stack, nor the pool's side."""
    probe = (
        "import sys, wtpy.sandbox._zygote\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'starlette', 'uvicorn', 'httpx', 'asyncio', 'ssl', 'wtpy'})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True
    )
    modules = set(loaded.stdout.split())
    assert "wtpy.sandbox._zygote" in modules and "wtpy.sandbox._worker" in modules
    assert {m for m in modules if m.split(".")[0] != "wtpy"} == set(), modules
    assert {
        m for m in modules if not (m in ("wtpy", "wtpy.contract") or m.startswith("wtpy.sandbox"))
    } == set(), modules
    assert "wtpy.sandbox._pool" not in modules and "wtpy.sandbox._procs" not in modules
