"""The RestrictedPython tier's guards and restricted globals (the language layer).

RestrictedPython rewrites attribute access, item access, iteration, writes and print
into calls to guard functions that it looks up in the module globals (`_getattr_`,
`_write_`, ...). This module supplies those guards, the builtins a hook may use, the
import guard, the print collector, and the reset of module state after an invocation.

On top of RestrictedPython's own rules (no names or attributes starting with `_`, no
frame/code introspection attributes, no `str.format`), the guards hold a hook to this
(see "guards" below for how):

* a hook never holds a module: `import m` gives a read-only view of m's allow-listed
  public API; submodules are importable, and reachable as attributes, only when they are
  allow-listed themselves (`collections.abc` is; `json.tool`, `re.functools` are not);
* attribute reads never run an object's own `__getattribute__`/`__getattr__` (a
  GenericAlias or typing alias would forward them to another object), attribute access
  through such objects is refused, and subscripting a class gives an inert placeholder;
* every value read is judged by what it is: functions that read or write attributes
  named at run time or evaluate text (`functools.update_wrapper`, `singledispatch`,
  `str.format`, `string.Formatter`, `ABCMeta.register`...) are refused however they are
  reached, and a mutable object shared with other invocations is handed out as a copy;
* objects are read-only except dicts, lists and instances of classes the hook itself
  defined in this invocation, and `setattr` never takes a name starting with `_`;
* reset_module_state(), called by the worker after every invocation, empties the
  module caches a hook can fill (re, strptime, codecs, enum pseudo-members, ABC caches).
"""

from __future__ import annotations
import __future__

import abc
import builtins
import codecs
import collections
import collections.abc
import contextlib
import copy
import encodings
import enum
import functools
import importlib
import itertools
import math
import operator
import os
import random
import re
import string
import sys
import types
import weakref
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from ._hook import ERROR_CLASSES, IMPORTABLE_MODULES, RANDOM_STATE_MODULES
from ._logcapture import HookLog, LogSink, as_text

__all__ = ["ModuleView", "guarded_getattr", "make_globals", "reseed_random", "reset_module_state"]


# C code of allowed modules imports these through the *calling frame's* `__import__`, i.e.
# ours when a hook calls it: datetime.strptime and time.strptime import `_strptime`. A hook
# cannot ask for them itself (imports are checked at compile time and `__import__` is not a
# name it can reach), and the module goes back to that C code, not to the hook.
_INTERNAL_IMPORTS = frozenset({"_strptime"})


# ----------------------------------------------------------------------------- guards
#
# The rule behind every guard below: a hook only ever holds objects whose attributes are
# looked up the generic way (the type's MRO, then the instance's own dict), and every
# value it gets from a read is judged by *what it is*, not by the route it came by.
#
# * Attribute reads never run an object's own `__getattribute__`/`__getattr__`: they go
#   through `object.__getattribute__` (`type.__getattribute__` for classes). An object that
#   forwards reads to another one (types.GenericAlias, typing aliases, weakref proxies) so
#   has nothing to forward; on top of that, attribute access through those types (and
#   frames, code objects, tracebacks, cells) is refused outright.
# * Subscripting a class (`list[int]`, `collections.abc.Mapping[str, int]`, a hook class
#   inheriting `__class_getitem__`) yields an inert placeholder, never a GenericAlias.
# * A module is never handed to a hook: `import m` gives a ModuleView of m's allow-listed
#   public API (_MODULE_API); an attribute that is a module is reachable only if that
#   module is itself allow-listed, and only as its view.
# * Every value read is checked (_checked): refused values (str.format, update_wrapper,
#   singledispatch, ABCMeta.register, eval... however reached: bound, unbound, through a
#   subclass or an alias attribute) raise; a real module becomes its view or raises; a
#   mutable object shared with other invocations (found at start-up by walking
#   everything the allow-list reaches: module values, class attributes, containers nested
#   in tuples and frozensets) is handed out as a fresh copy.

_RAISE = object()
_object_getattribute = object.__getattribute__
_type_getattribute = type.__getattribute__

# Names refused on every object: RestrictedPython's introspection names (frames, code),
# and `mro` (a class's `mro()` hands out `object` and every base class of anything).
_REFUSED_NAMES = frozenset(INSPECT_ATTRIBUTES) | {"mro"}

# Allowed modules with no `__all__`: their public API, spelt out. For the others, the API
# is `__all__` minus _REFUSED_API plus _EXTRA_API.
_EXPLICIT_API: dict[str, frozenset[str]] = {
    "hmac": frozenset({"new", "compare_digest", "digest", "HMAC"}),
    "itertools": frozenset(
        name for name in dir(itertools) if not name.startswith("_")
    ),
    "math": frozenset(name for name in dir(math) if not name.startswith("_")),
    # Not tzset (changes process-wide time zone state), clock_settime*, pthread_*.
    "time": frozenset({
        "altzone", "asctime", "ctime", "daylight", "get_clock_info", "gmtime", "localtime",
        "mktime", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
        "process_time", "process_time_ns", "sleep", "strftime", "strptime", "struct_time",
        "thread_time", "thread_time_ns", "time", "time_ns", "timezone", "tzname",
    }),
    "uuid": frozenset({
        "UUID", "SafeUUID", "uuid1", "uuid3", "uuid4", "uuid5", "getnode", "NAMESPACE_DNS",
        "NAMESPACE_URL", "NAMESPACE_OID", "NAMESPACE_X500", "RESERVED_NCS", "RFC_4122",
        "RESERVED_MICROSOFT", "RESERVED_FUTURE",
    }),
    "__future__": frozenset(__future__.all_feature_names),
}  # fmt: skip
_REFUSED_API: dict[str, frozenset[str]] = {
    # update_wrapper/wraps copy arbitrary attributes (a stdlib function's __globals__ into
    # a hook function); singledispatch* evaluate string annotations unrestricted;
    # GenericAlias forwards attribute reads; total_ordering is replaced (_total_ordering).
    "functools": frozenset({
        "update_wrapper", "wraps", "WRAPPER_ASSIGNMENTS", "WRAPPER_UPDATES", "singledispatch",
        "singledispatchmethod", "GenericAlias",
    }),
    "string": frozenset({"Formatter"}),  # get_field/format walk attributes named in text
    "hashlib": frozenset({"file_digest"}),  # calls readinto() with a memoryview
    "re": frozenset({"template", "TEMPLATE", "T"}),  # deprecated internals
}  # fmt: skip
_EXTRA_API: dict[str, frozenset[str]] = {"collections": frozenset({"abc"})}


def _total_ordering(cls: Any) -> Any:
    """functools.total_ordering for the hook's own classes (on a stdlib class it would add
    methods that every later invocation sees)."""
    if not isinstance(cls, type) or cls.__module__ != "webtask":
        raise TypeError("functools.total_ordering takes a class the hook defined")
    return functools.total_ordering(cls)


_REPLACED_API: dict[str, dict[str, Any]] = {"functools": {"total_ordering": _total_ordering}}


class ModuleView:
    """What a hook gets for `import m`: m's allow-listed public attributes, read-only.

    Also safe under a plain getattr (C code, `import a.b as c`): reads go through
    _view_attribute whoever makes them, and private names are never served."""

    __slots__ = ("_wtpy_name",)

    def __new__(cls, *args: Any, **kwargs: Any) -> ModuleView:
        raise TypeError("cannot create module views")

    def __getattribute__(self, name: str) -> Any:
        if type(name) is not str or name.startswith("_"):
            raise AttributeError(name)
        try:
            return _view_attribute(self, name)
        except _Refusal as exc:
            raise AttributeError(str(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("attribute-less object (assign or del)")

    def __delattr__(self, name: str) -> None:
        raise TypeError("attribute-less object (assign or del)")

    def __repr__(self) -> str:
        return f"<module {_VIEW_NAME.__get__(self)!r}>"

    def __dir__(self) -> list[str]:
        return sorted(_VIEW_ATTRS[_VIEW_NAME.__get__(self)])


_VIEW_NAME: Any = ModuleView.__dict__["_wtpy_name"]  # the slot's member descriptor
_VIEW_ATTRS: dict[str, dict[str, Any]] = {}  # module name -> allowed name -> real value
_VIEWS: dict[str, ModuleView] = {}  # module name -> its view
_VIEW_OF_MODULE: dict[int, ModuleView] = {}  # id(real module) -> its view


def _view_attribute(view: ModuleView, name: str) -> Any:
    module = _VIEW_NAME.__get__(view)
    try:
        value = _VIEW_ATTRS[module][name]
    except KeyError:
        real = sys.modules[module].__dict__.get(name, _RAISE)
        if isinstance(real, ModuleType):
            raise AttributeError(f"module {real.__name__!r} is not available to hooks") from None
        if real is _RAISE:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        raise AttributeError(f"{module}.{name} is not available to hooks") from None
    return _checked(value)


class _Subscripted:
    """What `list[int]` and other class subscriptions give a hook: an inert placeholder (a
    GenericAlias would forward attribute reads to its origin). Annotations keep working."""

    __slots__ = ("_text",)
    _text: str

    def __init__(self, text: str) -> None:
        object.__setattr__(self, "_text", text)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("attribute-less object (assign or del)")

    def __repr__(self) -> str:
        return self._text

    def __or__(self, other: Any) -> _Subscripted:
        return _Subscripted(f"{self._text} | {other!r}")

    __ror__ = __or__


def _alias_types() -> frozenset[type]:
    """Types whose instances forward attribute reads, or expose interpreter internals."""
    found: set[type] = {
        types.GenericAlias, types.UnionType, types.FrameType, types.CodeType,
        types.TracebackType, types.CellType, weakref.ProxyType, weakref.CallableProxyType,
        type(collections.abc.Callable[[int], int]), ModuleType,
    }  # fmt: skip
    typing = sys.modules.get("typing")
    if typing is not None:  # only there if something imported it (then hooks may meet them)
        for value in vars(typing).values():
            if isinstance(value, type) and issubclass(value, typing._Final):
                found.add(value)
    # and every loaded subclass of those
    frontier: list[type] = list(found)
    while frontier:
        subclasses: list[type] = type.__subclasses__(frontier.pop())
        for sub in subclasses:
            if sub not in found:
                found.add(sub)
                frontier.append(sub)
    return frozenset(found)


_OPAQUE_TYPES = _alias_types()


def _subscriptable_metaclass(metaclass: type) -> bool:
    """Whether `cls[x]` is the metaclass's own __getitem__ (EnumType: `RegexFlag['I']`)."""
    return any("__getitem__" in vars(klass) for klass in metaclass.__mro__ if klass is not type)


# Values a hook may never hold, by identity (id -> object; the objects stay alive, so the
# ids stay theirs). Bound methods are judged by their function (see _checked).
_REFUSED: dict[int, Any] = {
    id(value): value
    for value in (
        str.format, str.format_map, collections.UserString.format,
        collections.UserString.format_map, string.Formatter, functools.update_wrapper,
        functools.wraps, functools.singledispatch, functools.singledispatchmethod,
        functools.total_ordering, abc.ABCMeta.register, type, object, super, eval, exec,
        compile, open, getattr, setattr, delattr, vars, dir, globals, locals,
        builtins.__import__, breakpoint, input, importlib.import_module, types.GenericAlias,
        types.UnionType, copy.copy, copy.deepcopy, operator.attrgetter, operator.methodcaller,
        *(value for name, value in vars(builtins).items() if name in ("help", "copyright"))
    )
}  # fmt: skip
_STR_FORMATS = frozenset({"format", "format_map"})
# Names guarded_getattr looks at more closely (see _refuse_name); `_` names as well.
_SPECIAL_NAMES = _REFUSED_NAMES | _STR_FORMATS | {"obj"}
_BuiltinMethod = type(len)


def _refused(value: Any) -> bool:
    if id(value) in _REFUSED:
        return True
    kind = type(value)
    if kind is types.MethodType:  # a bound Python method: judge its function
        return id(value.__func__) in _REFUSED
    if kind is _BuiltinMethod:  # 'x'.format, S('x').format: bound C methods of str
        return value.__name__ in _STR_FORMATS and isinstance(value.__self__, str)
    return False


# Shared mutable objects (id -> object), filled at start-up by _find_shared: every list,
# dict, set, bytearray (and other mutable container) reachable from the allow-listed
# modules, and every tuple/frozenset that holds one. A hook gets a copy, never the object.
_SHARED: dict[int, Any] = {}
_MUTABLE_CONTAINERS = (list, dict, set, bytearray, collections.deque, collections.OrderedDict,
                       collections.defaultdict, collections.Counter)  # fmt: skip
# Immutable values that hold nothing: handed out as they are, without a further look.
_ATOMS = frozenset({str, int, float, bool, bytes, complex, type(None), type(...), range})


class _Refusal(AttributeError):
    """What a hook may not read (raised even when getattr() was given a default; the
    guards turn it into a plain AttributeError before the hook sees it)."""


class _RefusedValue(_Refusal):
    """A refused value (see _REFUSED): guarded_getattr names it by the attribute read."""


def _unshared(value: Any) -> Any:
    """A copy of a shared object that shares no mutable part with it."""
    return copy.deepcopy(value)


def _checked(value: Any) -> Any:
    """`value` as a hook may hold it (see the rule at the top of this section)."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if _refused(value):
        raise _RefusedValue(f"{_describe(value)} is not available to hooks")
    if kind in _OPAQUE_TYPES:
        if isinstance(value, ModuleType):
            view = _VIEW_OF_MODULE.get(id(value))
            if view is None:
                raise _Refusal(f"module {value.__name__!r} is not available to hooks")
            return view
        raise _Refusal(f"{kind.__name__} objects are not available to hooks")
    if id(value) in _SHARED:
        return _unshared(value)
    return value


def _describe(value: Any) -> str:
    try:
        name = (
            _type_getattribute(value, "__qualname__")
            if isinstance(value, type)
            else value.__qualname__
        )
    except AttributeError:
        return f"a {type(value).__name__} object"
    return str(name)


def _label(obj: Any) -> str:
    if type(obj) is ModuleView:
        return str(_VIEW_NAME.__get__(obj))
    return _describe(obj) if isinstance(obj, type) else type(obj).__name__


def guarded_getattr(obj: Any, name: str, default: Any = _RAISE) -> Any:
    """`obj.name` for hooks (also the `getattr` builtin): see the rule above.

    Missing attributes raise AttributeError like plain Python (safer_getattr's default
    of None would silently turn typos into None)."""
    if type(name) is not str:
        raise TypeError("type(name) must be str")
    if name in _SPECIAL_NAMES or name[:1] == "_":
        _refuse_name(obj, name)
    kind = type(obj)
    try:
        if kind is ModuleView:
            return _view_attribute(obj, name)
        if kind in _OPAQUE_TYPES:
            if isinstance(obj, ModuleType) and id(obj) in _VIEW_OF_MODULE:
                return _view_attribute(_VIEW_OF_MODULE[id(obj)], name)
            raise _Refusal(f"attributes of {kind.__name__} objects are not available to hooks")
        if issubclass(kind, type):  # a class: its MRO, then its metaclass's
            value = _type_getattribute(obj, name)
        else:
            value = _object_getattribute(obj, name)
        # _checked, inlined for the common cases (this runs for every attribute a hook reads)
        kind = type(value)
        if kind in _ATOMS:
            return value
        if kind is _BuiltinMethod and id(value) not in _REFUSED:  # bound C methods: 'x'.upper
            if value.__name__ in _STR_FORMATS and isinstance(value.__self__, str):
                raise _RefusedValue("str.format")
            return value
        return _checked(value)
    except _RefusedValue:
        raise AttributeError(f"{_label(obj)}.{name} is not available to hooks") from None
    except _Refusal as exc:
        raise AttributeError(str(exc)) from None
    except AttributeError:
        if default is _RAISE:
            raise
        return default


def _refuse_name(obj: Any, name: str) -> None:
    """Raise for `name`, or return when only some objects refuse it (and `obj` does not)."""
    if name[:1] == "_":
        raise AttributeError(f'"{name}" is an invalid attribute name because it starts with "_"')
    if name in _REFUSED_NAMES:
        raise AttributeError(
            f'"{name}" is a restricted name, that is forbidden to access in RestrictedPython.'
        )
    if name in _STR_FORMATS and (
        isinstance(obj, str | collections.UserString)
        or (isinstance(obj, type) and issubclass(obj, str | collections.UserString))
    ):
        raise NotImplementedError("Using the format*() methods of `str` is not safe")
    if name == "obj" and isinstance(obj, AttributeError):
        # the object a failed lookup was made on: inside stdlib code, an internal one
        raise AttributeError("AttributeError.obj is not available to hooks")


def _guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, NotImplementedError):
        return False
    return True


def _guarded_getitem(obj: Any, index: Any) -> Any:
    if isinstance(obj, type) and not _subscriptable_metaclass(type(obj)):
        # list[int], Mapping[str, int], a hook class with __class_getitem__: a GenericAlias
        # would forward attribute reads to its origin (and through it, to anything).
        return _Subscripted(f"{obj.__qualname__}[{index!r}]")
    if type(obj) in _OPAQUE_TYPES:
        raise TypeError(f"{type(obj).__name__} objects are not subscriptable by hooks")
    value = obj[index]
    if type(value) in _OPAQUE_TYPES and not isinstance(value, ModuleType):
        return _Subscripted(f"{obj!r}[{index!r}]")
    try:
        return _checked(value)
    except AttributeError:
        raise KeyError(index) from None


# Set by the import guard: this process has run hook code that imported a module since
# the last reset_module_state(), so module caches may hold what it left (see there).
_dirty = False
_classes_defined = False  # and defined a class (see reset_module_state)


def _guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> Any:
    global _dirty
    if type(name) is str and level == 0 and name in _INTERNAL_IMPORTS:
        _dirty = True
        return builtins.__import__(name)  # PyImport_Import passes fromlist ["__doc__"]
    if type(name) is not str or level != 0 or name not in IMPORTABLE_MODULES:
        raise ImportError(f"import of module {name!r} is not allowed")
    if name != "__future__":
        _dirty = True
    if not fromlist:
        return _VIEWS[name.partition(".")[0]]  # `import a.b` binds a; a.b is an attribute
    # `from m import x` reads x off whatever we return, with a plain getattr: a namespace of
    # the checked values, with a clear error for a refused name.
    values: dict[str, Any] = {}
    view = _VIEWS[name]
    for item in fromlist:
        if type(item) is not str or item.startswith("_"):
            raise ImportError(f"cannot import name {item!r} from {name!r}")
        try:
            values[item] = _view_attribute(view, item)
        except (AttributeError, NotImplementedError) as exc:
            raise ImportError(f"cannot import name {item!r} from {name!r}: {exc}") from None
    return SimpleNamespace(**values)


def _build_views() -> None:
    for module_name in sorted(IMPORTABLE_MODULES):
        module = sys.modules[module_name]
        if module_name in _EXPLICIT_API:
            api = set(_EXPLICIT_API[module_name])
        else:
            api = set(module.__all__) - _REFUSED_API.get(module_name, frozenset())
        api |= _EXTRA_API.get(module_name, frozenset())
        attrs = {name: module.__dict__[name] for name in sorted(api) if name in module.__dict__}
        attrs.update(_REPLACED_API.get(module_name, {}))
        view = object.__new__(ModuleView)
        _VIEW_NAME.__set__(view, module_name)
        _VIEWS[module_name] = view
        _VIEW_OF_MODULE[id(module)] = view
        _VIEW_ATTRS[module_name] = attrs
    for attrs in _VIEW_ATTRS.values():  # submodules: their views, if allow-listed
        for name, value in list(attrs.items()):
            if isinstance(value, ModuleType):
                assert value.__name__ in _VIEWS, value
                attrs[name] = _VIEWS[value.__name__]
    for module_name, attrs in _VIEW_ATTRS.items():
        for name, value in attrs.items():
            assert not _refused(value), (module_name, name)


def _find_shared() -> None:
    """Fill _SHARED: walk what the allow-list reaches (module values, their classes' and
    instances' attributes, public or not, through containers), record what is mutable.
    And note the module state reset_module_state() resets: the ABCs and Flag enums met,
    and the lru caches of every module whose functions were met."""
    seen: set[int] = set()
    modules: set[str] = set()
    frontier: list[Any] = [value for attrs in _VIEW_ATTRS.values() for value in attrs.values()]
    frontier += list(_BASE_BUILTINS.values())

    def holds_mutable(value: Any, depth: int = 0) -> bool:
        if isinstance(value, _MUTABLE_CONTAINERS):
            return True
        if isinstance(value, tuple | frozenset) and depth < 50:
            return any(holds_mutable(item, depth + 1) for item in value)
        return False

    while frontier:
        value = frontier.pop()
        if id(value) in seen or type(value) in _ATOMS and not isinstance(value, types.FunctionType):
            continue
        seen.add(id(value))
        if type(value) is ModuleView or isinstance(value, ModuleType):
            continue
        if holds_mutable(value):
            _SHARED[id(value)] = value
        if isinstance(value, dict):
            frontier += value.values()
            continue
        if isinstance(value, tuple | frozenset | list | set | collections.deque):
            frontier += value
            continue
        if isinstance(value, type):
            if isinstance(value, abc.ABCMeta):
                _ABCS.append(value)
            if issubclass(value, enum.Flag) and value is not enum.Flag:
                members = value._value2member_map_
                _FLAG_MEMBERS.append((members, dict(members)))
            for klass in value.__mro__:
                frontier += vars(klass).values()
            continue
        if isinstance(value, types.FunctionType):
            modules.add(value.__module__)
        with contextlib.suppress(TypeError):  # no __dict__
            frontier += vars(value).values()
    for name in sorted(modules):
        module = sys.modules.get(name)
        for cached in vars(module).values() if module is not None else ():
            if isinstance(cached, functools._lru_cache_wrapper) and cached not in _LRU_CACHES:
                _LRU_CACHES.append(cached)


_build_views()


# Bound now, not looked up on `random` (a module hooks can import) when reseeding. The
# Python-level seed, not the C one: it also drops the instance's cached gauss value.
_seed_random = random.seed


def reseed_random() -> None:
    """Fresh, unpredictable state for the `random` module's process-wide instance: 256 bits
    from the OS (random.seed() would read 2,496 bytes: twice the cost, no gain here)."""
    _seed_random(int.from_bytes(os.urandom(32), "big"))


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "^=": operator.ixor, "|=": operator.ior,
    "@=": operator.imatmul,
}  # fmt: skip


def _inplacevar(op: str, x: Any, y: Any) -> Any:
    return _INPLACE[op](x, y)


def _apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


# ----------------------------------------------------------------------------- print

_MAX_PRINTED = 1024 * 1024


class _PrintCollector:
    """RestrictedPython's `_print_`: one instance per scope; each print() is a log line.

    One class for every invocation (defining a class per call costs more than the rest of
    make_globals): the hook never reaches it, `_print` being a name it cannot write."""

    __slots__ = ("txt", "size", "_sink")

    def __init__(self, sink: LogSink) -> None:
        self.txt: list[str] = []  # for RestrictedPython's `printed` name
        self.size = 0
        self._sink = sink

    def write(self, text: str) -> None:
        if self.size < _MAX_PRINTED:  # a print loop must not grow this without bound
            self.txt.append(text)
            self.size += len(text)

    def __call__(self) -> str:  # the `printed` name
        return "".join(self.txt)

    def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", file: Any = None,
                    flush: bool = False) -> None:  # fmt: skip
        sep = " " if sep is None else as_text(sep)
        end = "\n" if end is None else as_text(end)
        text = sep.join(map(as_text, objects))
        if file is not None:  # a hook object with a write method; never a real file
            guarded_getattr(file, "write")(text + end)
            return
        self.write(text + end)
        self._sink.emit("info", text)


def _print_factory(sink: LogSink) -> Callable[..., Any]:
    def collector(_getattr_: Any = None) -> _PrintCollector:
        return _PrintCollector(sink)

    return collector


# ----------------------------------------------------------------------------- globals


_EXTRA_BUILTINS = (
    "all", "any", "bytes", "dict", "enumerate", "filter", "frozenset", "iter", "list", "map",
    "max", "min", "next", "reversed", "set", "sorted", "sum", "tuple", "zip",
)  # fmt: skip


# The builtins every invocation starts from (copied per call, then the per-call guards added).
# Built without deleting a key: dict.copy() of a dict with no deleted slot is one memcpy
# (about 7 times faster than copying this one after a pop).
_BASE_BUILTINS: dict[str, Any] = {
    name: value
    for name, value in {
        **safe_builtins,
        **{name: getattr(builtins, name) for name in _EXTRA_BUILTINS},
        "getattr": guarded_getattr,
        "hasattr": _guarded_hasattr,
    }.items()
    if name != "_getattr_"
}


# The globals every invocation starts from (copied per call, then the per-call ones added).
_BASE_GLOBALS: dict[str, Any] = {
    "__name__": "webtask",
    "__metaclass__": type,
    "_getattr_": guarded_getattr,
    "_getitem_": _guarded_getitem,
    "_getiter_": iter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_inplacevar_": _inplacevar,
    "_apply_": _apply,
    **ERROR_CLASSES,
}


def make_globals(sink: LogSink) -> dict[str, Any]:
    """Fresh restricted globals for one invocation (nothing is shared between two calls
    except immutable builtins and the allowed modules, which hooks cannot write to)."""
    hook_classes: set[type] = set()

    def build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
        global _classes_defined
        _classes_defined = True
        cls = builtins.__build_class__(func, name, *bases, **kwargs)
        hook_classes.add(cls)
        return cls

    def write_guard(obj: Any) -> Any:
        # Instances of the hook's own classes are its own to write (public names only:
        # RestrictedPython refuses `obj._x = ...` at compile time, setattr below at run time).
        # Plain dicts and lists (what full_write_guard passes as they are) without a call.
        cls = type(obj)
        if cls is dict or cls is list or cls in hook_classes:
            return obj
        return full_write_guard(obj)

    def guarded_setattr(obj: Any, name: str, value: Any) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"setattr of {name!r} is not allowed")
        setattr(write_guard(obj), name, value)

    def guarded_delattr(obj: Any, name: str) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"delattr of {name!r} is not allowed")
        delattr(write_guard(obj), name)

    reseeded = False

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        # The `random` module's state is process-wide: the first import in this invocation
        # of a module that reaches it reseeds it, so no hook sees values another one seeded
        # or drew (reseeding on every job cost more than the rest of this function). Once
        # only: the hook's own random.seed() holds for the rest of its run.
        nonlocal reseeded
        if (
            not reseeded
            and isinstance(name, str)
            and name.partition(".")[0] in RANDOM_STATE_MODULES
        ):
            reseed_random()
            reseeded = True
        return _guarded_import(name, globals, locals, fromlist, level)

    restricted_builtins = _BASE_BUILTINS.copy()
    restricted_builtins["__build_class__"] = build_class
    restricted_builtins["__import__"] = guarded_import
    restricted_builtins["setattr"] = guarded_setattr
    restricted_builtins["delattr"] = guarded_delattr
    namespace = _BASE_GLOBALS.copy()
    namespace["__builtins__"] = restricted_builtins
    namespace["_write_"] = write_guard
    namespace["_print_"] = _print_factory(sink)
    namespace["log"] = HookLog(sink)
    return namespace


# ----------------------------------------------------------------------------- module state

# Caches of the allowed modules that hook input fills, and what they held at start-up.
# re keeps compiled patterns with their pattern object (a hook's str subclass, with its
# attributes: a parked generator, 200 MB); _strptime keeps format strings the same way;
# RegexFlag keeps every pseudo-member made from an int (an int subclass of the hook's);
# encodings keeps every encoding name asked for, found or not (`b"".decode("x" * 10**8)`),
# and so does the interpreter's codec cache (cleared by unregistering a search function).
_strptime_regex_cache: dict[Any, Any] = importlib.import_module("_strptime")._regex_cache
_encodings_cache: dict[str, Any] = encodings._cache
_ENCODINGS_AT_START = dict(_encodings_cache)
_FLAG_MEMBERS: list[tuple[dict[Any, Any], dict[Any, Any]]] = []  # (_value2member_map_, at start)
_ABCS: list[Any] = []  # ABCs a hook reaches: their isinstance caches
_LRU_CACHES: list[Any] = []  # functools.lru_cache functions of the modules hooks reach
_re_purge = re.purge


def _no_codec(name: str) -> None:
    return None


codecs.register(_no_codec)


def _reset_codecs() -> None:
    _encodings_cache.clear()
    _encodings_cache.update(_ENCODINGS_AT_START)
    codecs.unregister(_no_codec)  # empties the interpreter's codec search cache
    codecs.register(_no_codec)


def reset_module_state() -> None:
    """Empty what an invocation may have left in module caches; the worker calls this
    after every invocation. Costs a global read and a len() when the hook imported
    nothing (only `str.encode`/`bytes.decode` reach a cache without an import)."""
    global _dirty, _classes_defined
    if len(_encodings_cache) != len(_ENCODINGS_AT_START):
        _reset_codecs()
    if not _dirty:
        return
    _dirty = False
    _re_purge()  # re's pattern cache and its lru-cached replacement templates
    _strptime_regex_cache.clear()
    for members, at_start in _FLAG_MEMBERS:
        if len(members) != len(at_start):
            members.clear()
            members.update(at_start)
    if _classes_defined:
        # isinstance/issubclass against an ABC remember the classes they were asked about
        # (weakly: these caches keep nothing alive, but need not outlast the invocation).
        # Only a hook's own classes are worth forgetting: 5 us, so only when it made one.
        _classes_defined = False
        for cls in _ABCS:
            cls._abc_caches_clear()
    for cached in _LRU_CACHES:
        cached.cache_clear()


_find_shared()
