"""The language layer (wtpy/sandbox/_rp_guards.py) on its own, in process.

Hooks run through the real worker code (`_worker.Worker.handle`, in this process), so the
module state they leave behind can be inspected directly, and `reset_module_state()` is
called the way the worker calls it after every invocation. tests/test_hostile.py drives
the same escapes end to end; the walk at the bottom is the attacker's view of everything
reachable.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import hashlib
import json
import re
import sys
import textwrap
import types
import weakref
from typing import Any

import orjson
import pytest

from wtpy.sandbox import _rp_guards
from wtpy.sandbox._rp_guards import (
    _VIEWS,
    ModuleView,
    _guarded_getitem,
    _guarded_import,
    guarded_getattr,
    reset_module_state,
)

ARGS: dict[str, Any] = {"client": {"id": "c"}, "scope": [], "audience": "a", "context": {"k": "v"}}
ORDER = ["client", "scope", "audience", "context"]


def run(code: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """One invocation through the worker's own code, then the worker's reset."""
    from wtpy.sandbox import _worker

    code = textwrap.dedent(code)
    args = ARGS if context is None else {**ARGS, "context": context}
    frame = {"id": 1, "op": "run", "key": code, "code": code, "args": args, "order": ORDER,
             "limits": {"cpu_seconds": None}}  # fmt: skip
    reply = _worker.Worker(memory_mb=0).handle(frame)
    reset_module_state()
    if "result" in reply:  # the JSON text the worker would send
        reply["result"] = orjson.loads(reply["result"])
    return reply


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply.get("result")


def refused(reply: dict[str, Any], message: str, name: str = "AttributeError") -> None:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert error["name"] == name and message in error["message"], error


# --- the known escape and its variants ---------------------------------------------------------


ESCAPE = """
import functools, json
def hook(client, scope, audience, context):
    functools.GenericAlias(functools, ()).update_wrapper(hook, json.dumps, (), ("__globals__",))
    def escaped():
        e = eval
        return [e("__import__('os').getuid()"), open("/etc/hostname").read()]
    return {"r": escaped()}
"""


def test_the_generic_alias_escape_is_refused() -> None:
    refused(run(ESCAPE), "functools.GenericAlias is not available to hooks")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # re.functools reaches functools without importing it
        ("import re\n    return re.functools.update_wrapper", "module 'functools' is not available"),
        ("import re\n    return re.functools.GenericAlias(re, ())", "module 'functools' is not available"),
        ("import functools\n    return functools.update_wrapper", "functools.update_wrapper is not available"),
        ("import functools\n    return functools.wraps", "functools.wraps is not available"),
        ("import functools\n    return getattr(functools, 'singledispatch')", "singledispatch is not available"),
        ("import functools\n    return functools.singledispatchmethod", "is not available"),
        # str.format / UserString.format walk attributes named in the format string
        ("import collections, json\n    u = collections.UserString[int]\n"
         "    return u.format(collections.UserString('{0.__globals__}'), json.dumps)", "has no attribute 'format'"),
        ("import collections\n    return collections.UserString.format", "format*() methods"),
        ("import collections\n    return collections.UserString('{0}').format_map", "format*() methods"),
        ("return '{0.__class__}'.format", "format*() methods"),
        ("return str.format_map", "format*() methods"),
        ("import string\n    return string.Formatter", "string.Formatter is not available"),
        ("import string\n    return string.Formatter().get_field('0.__globals__', [len], {})",
         "string.Formatter is not available"),
        # ABC registration changes isinstance() for everyone
        ("import collections.abc\n    return collections.abc.Mapping.register", "Mapping.register is not available"),
        ("import collections.abc\n    return collections.abc.Mapping[str, int].register",
         "has no attribute 'register'"),
        ("import collections\n    return collections.UserDict.register", "UserDict.register is not available"),
        # a hook's own class inherits __class_getitem__ and register
        ("return S[int].register", "has no attribute 'register'"),
        ("return S.register", "S.register is not available"),
        # alias types and the way to them
        ("import collections.abc\n    return collections.abc.Callable[[int], int].mro", "restricted name"),
        ("return int.mro()", '"mro" is a restricted name'),
        ("import time\n    return time.tzset", "time.tzset is not available"),
        ("import hashlib\n    return hashlib.file_digest", "hashlib.file_digest is not available"),
        ("import datetime\n    return datetime.sys", "module 'sys' is not available"),
        ("import json\n    return json.decoder", "module 'json.decoder' is not available"),
        ("import json\n    return json.scanner", "module 'json.scanner' is not available"),
        ("import uuid\n    return uuid.platform", "module 'platform' is not available"),
        ("import re\n    return re.enum", "module 'enum' is not available"),
        ("try:\n        context.nope\n    except AttributeError as e:\n        return e.obj",
         "AttributeError.obj is not available"),
    ],
)  # fmt: skip
def test_variants_are_refused(body: str, message: str) -> None:
    code = f"import collections.abc\n\nclass S(str, collections.abc.Iterable):\n    pass\n\ndef hook(client, scope, audience, context):\n    {body}\n"
    refused(
        run(code), message, "NotImplementedError" if "format*()" in message else "AttributeError"
    )


def test_functools_total_ordering_only_for_the_hooks_own_classes() -> None:
    code = """
    import functools, json

    @functools.total_ordering
    class V:
        def __init__(self, v):
            self.v = v
        def __lt__(self, other):
            return self.v < other.v
        def __eq__(self, other):
            return self.v == other.v

    def hook(client, scope, audience, context):
        try:
            functools.total_ordering(json.JSONDecodeError)
        except TypeError as exc:
            return [V(1) >= V(0), str(exc)]
    """
    assert ok(run(code)) == [True, "functools.total_ordering takes a class the hook defined"]


def test_class_subscription_is_inert_and_annotations_still_work() -> None:
    code = """
    import collections.abc, re

    class S(str, collections.abc.Iterable):
        pass

    def hook(client: dict[str, int], scope: list[str] | None, audience, context) -> list[int]:
        out = [repr(list[int]), repr(S[int]), str(re.RegexFlag["IGNORECASE"])]
        for attempt in (lambda: list[int](), lambda: isinstance([], list[int]), lambda: list[int].append):
            try:
                attempt()
            except TypeError:
                out.append("TypeError")
            except AttributeError:
                out.append("AttributeError")
        return out
    """
    assert ok(run(code)) == ["list[<class 'int'>]", "S[<class 'int'>]", "re.IGNORECASE",
                             "TypeError", "TypeError", "AttributeError"]  # fmt: skip


def test_guards_do_not_follow_forwarding_objects() -> None:
    """Even if a GenericAlias (or any forwarding object) reached a hook, the guard refuses
    it, and would not forward the read: it looks the attribute up the generic way."""
    import functools

    alias = types.GenericAlias(functools, ())  # type: ignore[arg-type]  # any object may forward
    for name in ("update_wrapper", "origin", "wraps"):
        with pytest.raises(AttributeError, match="not available to hooks"):
            guarded_getattr(alias, name)
    with pytest.raises(TypeError):
        _guarded_getitem(alias, 0)
    assert repr(_guarded_getitem(collections.abc.Mapping, (str, int))).startswith("Mapping[")

    class Forwarder:  # a __getattr__ the hook did not write (hooks cannot define one)
        def __getattr__(self, name: str) -> Any:
            return functools.update_wrapper

    with pytest.raises(AttributeError, match="has no attribute"):
        guarded_getattr(Forwarder(), "anything")


def test_a_real_module_becomes_its_view_or_is_refused() -> None:
    assert guarded_getattr(SimpleHolder(json), "module") is _VIEWS["json"]
    with pytest.raises(AttributeError, match="module 'os' is not available"):
        guarded_getattr(SimpleHolder(sys.modules["os"]), "module")
    assert guarded_getattr(json, "dumps") is json.dumps  # read through json's view
    with pytest.raises(AttributeError, match="json.codecs|module 'codecs'"):
        guarded_getattr(json, "codecs")


class SimpleHolder:
    def __init__(self, module: Any) -> None:
        self.module = module


def test_module_views_are_read_only_and_private() -> None:
    view = _VIEWS["json"]
    assert repr(view) == "<module 'json'>"
    with pytest.raises(TypeError):
        view.dumps = len
    with pytest.raises(TypeError):
        ModuleView()
    for name in ("__dict__", "__class__", "__name__", "_default_encoder", "__spec__"):
        with pytest.raises(AttributeError):
            getattr(view, name)  # a plain getattr, as C code or `import a.b as c` would
    assert view.dumps is json.dumps


# --- imports -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["json.tool", "json.decoder", "re._parser", "collections.abc.sys", "os",
                                  "encodings.idna", "_strptime.os", "json.", ".json", "__future__.x"])  # fmt: skip
def test_submodules_are_not_importable_unless_allow_listed(name: str) -> None:
    with pytest.raises(ImportError, match="is not allowed"):
        _guarded_import(name)
    with pytest.raises(ImportError, match="is not allowed"):
        _guarded_import(name, None, None, ("x",))


def test_import_of_a_str_subclass_name_is_refused() -> None:
    class Name(str):
        pass

    with pytest.raises(ImportError):
        _guarded_import(Name("json"))


def test_allowed_imports_give_views() -> None:
    assert _guarded_import("collections.abc") is _VIEWS["collections"]
    assert _VIEWS["collections"].abc is _VIEWS["collections.abc"]
    namespace = _guarded_import("collections", None, None, ("abc", "OrderedDict"))
    assert (
        namespace.abc is _VIEWS["collections.abc"]
        and namespace.OrderedDict is collections.OrderedDict
    )
    with pytest.raises(ImportError, match="cannot import name 'update_wrapper'"):
        _guarded_import("functools", None, None, ("update_wrapper",))


# --- shared mutable values -------------------------------------------------------------------


def test_shared_mutables_are_copies() -> None:
    code = """
    import hashlib
    def hook(client, scope, audience, context):
        hashlib.algorithms_available.add(context["secret"])
        hashlib.algorithms_guaranteed.clear()
        return "ok"
    """
    before = (set(hashlib.algorithms_available), set(hashlib.algorithms_guaranteed))
    assert ok(run(code, {"secret": "tenant-a-secret"})) == "ok"
    assert (hashlib.algorithms_available, hashlib.algorithms_guaranteed) == before


def test_every_shared_mutable_is_copied_on_read() -> None:
    """Everything _find_shared found (module values, class attributes, containers nested
    in tuples) comes out of the guard as a copy, never as itself."""
    assert _rp_guards._SHARED, "the walk found nothing: it is broken"
    for value in _rp_guards._SHARED.values():
        copied = _rp_guards._checked(value)
        assert copied is not value and copied == value


# --- module caches: nothing is carried into the next invocation ----------------------------


def test_re_cache_keeps_no_hook_object_and_no_parked_memory() -> None:
    code = """
    import re
    class Pattern(str):
        pass
    def hook(client, scope, audience, context):
        p = Pattern("wtpy-parked-" + context["tag"])
        p.ballast = "x" * (20 * 1024 * 1024)
        re.compile(p)
        re.sub("a", p, "a")
        return "parked"
    """
    assert ok(run(code, {"tag": "1"})) == "parked"
    assert not any("wtpy-parked" in str(key) for key in re._cache)  # type: ignore[attr-defined]
    assert re._compile_repl.cache_info().currsize == 0  # type: ignore[attr-defined]


def test_strptime_cache_keeps_no_hook_object() -> None:
    import importlib

    _strptime = importlib.import_module("_strptime")  # it has no stubs

    code = """
    import datetime
    class Format(str):
        pass
    def hook(client, scope, audience, context):
        f = Format("%Y-%m-%d wtpy")
        f.ballast = "x" * 1000
        return datetime.datetime.strptime("2024-01-02 wtpy", f).isoformat()
    """
    assert ok(run(code)) == "2024-01-02T00:00:00"
    assert not any("wtpy" in str(key) for key in _strptime._regex_cache)


def test_regexflag_pseudo_members_do_not_accumulate() -> None:
    members = re.RegexFlag._value2member_map_
    before = dict(members)
    code = """
    import re
    class Big(int):
        pass
    def hook(client, scope, audience, context):
        for i in range(200):
            re.RegexFlag(Big(1 << (40 + i)))
        return len(str(re.I | re.M))
    """
    ok(run(code))
    assert members == before


def test_codec_lookups_of_made_up_names_do_not_park_memory() -> None:
    import encodings

    code = """
    def hook(client, scope, audience, context):
        for i in range(3):
            try:
                b"x".decode("q" * 1_000_000 + str(i))
            except LookupError:
                pass
        return "x".encode("UTF-8").decode("Latin-1")
    """
    before = dict(encodings._cache)
    assert ok(run(code)) == "x"
    assert encodings._cache == before
    assert "é".encode("utf-16").decode("utf-16") == "é"  # codecs still found afterwards


def test_abc_caches_keep_no_hook_class() -> None:
    code = """
    import collections.abc
    class Mine(dict):
        pass
    def hook(client, scope, audience, context):
        return [isinstance(Mine(), collections.abc.Mapping), issubclass(Mine, collections.abc.Sequence)]
    """
    assert ok(run(code)) == [True, False]
    gc.collect()
    for cls in (collections.abc.Mapping, collections.abc.Sequence):
        registry, cache, negative, _ = __import__("_abc")._get_dump(cls)
        assert not any(ref().__name__ == "Mine" for ref in cache | negative if ref() is not None)


def test_tenant_a_leaves_nothing_for_tenant_b() -> None:
    """One process, one invocation after the other: A tries every way above to leave
    state behind; B sees a pristine set of modules."""
    tenant_a = """
    import collections.abc, hashlib, re, functools
    class P(str):
        pass
    def hook(client, scope, audience, context):
        out = []
        for attempt in (
            lambda: collections.abc.Mapping.register(list),
            lambda: collections.abc.Mapping[str, int].register(list),
            lambda: hashlib.algorithms_available.add(context["secret"]),
            lambda: re.compile(P(context["secret"])),
            lambda: functools.total_ordering(collections.OrderedDict),
        ):
            try:
                attempt()
                out.append("ok")
            except AttributeError:
                out.append("AttributeError")
            except TypeError:
                out.append("TypeError")
        return out
    """
    tenant_b = """
    import collections.abc, hashlib, re
    def hook(client, scope, audience, context):
        return [isinstance([], collections.abc.Mapping), sorted(hashlib.algorithms_available) == context["algorithms"],
                len(re.findall("a", "banana"))]
    """
    secret = "secret-of-tenant-a-0123456789"
    assert ok(run(tenant_a, {"secret": secret})) == [
        "AttributeError",
        "AttributeError",
        "ok",
        "ok",
        "TypeError",
    ]
    assert ok(run(tenant_b, {"algorithms": sorted(hashlib.algorithms_available)})) == [
        False,
        True,
        3,
    ]
    assert not any(secret in str(key) for key in re._cache)  # type: ignore[attr-defined]
    assert secret not in hashlib.algorithms_available


def test_hook_objects_die_with_their_invocation() -> None:
    """What a hook put into module caches is released by reset_module_state: a weak
    reference to its str-subclass pattern dies once the invocation's garbage is gone."""
    refs: list[Any] = []
    probe = """
    import re, datetime
    class P(str):
        pass
    def hook(client, scope, audience, context):
        p = P("wtpy-probe")
        re.compile(p)
        datetime.datetime.strptime("2024", P("%Y"))
        context["keep"](p)
        return 1
    """
    from wtpy.sandbox import _worker

    code = textwrap.dedent(probe)
    frame = {"id": 1, "op": "run", "key": code, "code": code, "order": ORDER, "limits": {"cpu_seconds": None},
             "args": {**ARGS, "context": {}}}  # fmt: skip
    worker = _worker.Worker(memory_mb=0)
    original = _worker.Worker.handle

    # Hand the hook a way to give us its object (only this test does that).
    def handle(self: Any, frame: dict[str, Any]) -> Any:
        frame["args"]["context"]["keep"] = lambda obj: refs.append(weakref.ref(obj))
        return original(self, frame)

    handle(worker, frame)
    reset_module_state()
    gc.collect()
    assert refs and refs[0]() is None


# --- the cost ------------------------------------------------------------------------------


def test_reset_module_state_is_cheap_when_nothing_was_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an invocation that imported nothing, the reset empties no cache: it only reads
    a flag and a length (counted here, not timed: speed is measured in bench/)."""
    from wtpy.sandbox import _rp_guards as _policy

    reset_module_state()  # whatever earlier tests left
    calls: list[str] = []
    monkeypatch.setattr(_policy, "_re_purge", lambda: calls.append("re.purge"))
    monkeypatch.setattr(_policy, "_reset_codecs", lambda: calls.append("codecs"))
    for _ in range(3):
        reset_module_state()
    assert calls == []
    _policy._dirty = True  # what an import by a hook sets
    reset_module_state()
    assert calls == ["re.purge"]


# --- the attacker's walk -------------------------------------------------------------------


def _reachable(depth: int = 5) -> dict[int, tuple[str, Any]]:
    """Everything a hook reaches from its builtins and the allowed modules, through the
    guards only: public attribute chains, items of small containers, class subscriptions."""
    from wtpy.sandbox._rp_guards import _BASE_BUILTINS

    seen: dict[int, tuple[str, Any]] = {}
    frontier: list[tuple[str, Any]] = [(f"builtins.{k}", v) for k, v in _BASE_BUILTINS.items()]
    frontier += [(name, view) for name, view in _VIEWS.items()]
    for _ in range(depth):
        following: list[tuple[str, Any]] = []
        for path, obj in frontier:
            if id(obj) in seen:
                continue
            seen[id(obj)] = (path, obj)
            for name in dir(obj):
                if name.startswith("_"):
                    continue
                try:
                    value = guarded_getattr(obj, name)
                except Exception:
                    continue
                following.append((f"{path}.{name}", value))
                if isinstance(value, tuple | frozenset | list | set) and len(value) < 100:
                    following += [(f"{path}.{name}[{i}]", item) for i, item in enumerate(value)]
                if isinstance(value, dict) and len(value) < 100:
                    following += [(f"{path}.{name}[{k!r}]", item) for k, item in value.items()]
                if isinstance(value, type):
                    with contextlib.suppress(Exception):
                        following.append((f"{path}.{name}[int]", _guarded_getitem(value, int)))
        frontier = following
    return seen


def test_the_attacker_walk_finds_nothing() -> None:
    """No real module, no forwarding or introspection object, no refused function, no
    shared mutable object is reachable, by any public attribute chain of up to 5 names."""
    from wtpy.sandbox._rp_guards import _OPAQUE_TYPES, _refused

    reached = _reachable()
    assert len(reached) > 1000  # the walk does walk
    problems = []
    for path, obj in reached.values():
        if isinstance(obj, types.ModuleType):
            problems.append(("module", path))
        elif type(obj) in _OPAQUE_TYPES:
            problems.append(("opaque", path))
        elif _refused(obj):
            problems.append(("refused", path))
        elif id(obj) in _rp_guards._SHARED:
            problems.append(("shared", path))
        elif obj in (type, object, eval, exec, compile, open, getattr, vars):
            problems.append(("builtin", path))
    assert problems == []


def test_no_reachable_class_aliases_a_refused_function() -> None:
    """The guard refuses str.format & co. by identity; a stdlib class attribute that is one
    of them under another name is refused the same way, and none exists unrefused."""
    from wtpy.sandbox._rp_guards import _REFUSED

    for _, obj in _reachable(3).values():
        if isinstance(obj, type):
            for klass in obj.__mro__:
                for name, value in vars(klass).items():
                    if id(value) in _REFUSED and not name.startswith("_"):
                        with pytest.raises((AttributeError, NotImplementedError)):
                            guarded_getattr(obj, name)
