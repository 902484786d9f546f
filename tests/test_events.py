"""The JSON form of events: ``from_dict`` builds exactly what the dataclass ``__init__`` and
the field type checks build (it fills the instance directly, for speed), ``to_dict`` gives
what the fields hold."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Dict

import pytest

from kvstore import events
from kvstore.events import StoreEvent


def reference(d: Dict[str, Any], store: Any = None) -> StoreEvent:
    """from_dict as written before the fast path: kwargs through __init__, then the checks."""
    cls = events._CLASSES[d["type"]]
    names = events._json_fields(cls)
    try:
        event = cls(store=store, **{k: v for k, v in d.items() if k in names})
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    event._check_types()
    return event


# Values of every JSON kind, wrong ones for most fields and right ones for some.
VALUES = ["", "k", 0, 3, -1, 1.5, True, False, None, {}, {"a": [1]}, [1]]


def samples():
    for name, cls in sorted(events._CLASSES.items()):
        if cls.__module__ != events.__name__:
            continue
        names = events._json_fields(cls)
        base = StoreEvent.from_dict({"type": name, "origin": "o", "timestamp": 1.0}).to_dict()
        yield base
        yield {"type": name}  # every field defaulted
        yield {**base, "extra": 1, "store": "ignored"}
        for field, value in itertools.product(names, VALUES):
            yield {**base, field: value}
        for field in names:
            yield {k: v for k, v in base.items() if k != field}


@pytest.mark.parametrize("d", list(samples()), ids=lambda d: str(sorted(d.items()))[:60])
def test_from_dict_builds_what_init_builds(d: Dict[str, Any]) -> None:
    store = object()
    try:
        want: Any = reference(d, store)
    except ValueError:
        want = ValueError
    try:
        got: Any = StoreEvent.from_dict(d, store=store)
    except ValueError:
        got = ValueError
    if want is ValueError or got is ValueError:
        assert got is want
        return
    assert type(got) is type(want)
    if "timestamp" not in d:  # each made its own: now
        assert abs(got.timestamp - want.timestamp) < 60
        want = want.replace(timestamp=got.timestamp)
    assert got == want
    assert got.store is store
    for name in events._json_fields(type(want)):
        assert getattr(got, name) == getattr(want, name)
        assert type(getattr(got, name)) is type(getattr(want, name))
    assert got.to_dict().keys() == want.to_dict().keys()
    assert list(vars(got)) == list(vars(want))  # fields in the same order
    with pytest.raises(AttributeError):
        got.key = "changed"  # type: ignore[misc]  # still frozen


def test_missing_timestamp_and_metadata_are_made_fresh() -> None:
    a = StoreEvent.from_dict({"type": "StoreSetEvent"})
    b = StoreEvent.from_dict({"type": "StoreSetEvent"})
    assert a.metadata == {} and a.metadata is not b.metadata
    assert a.timestamp > 0


def test_remote_replaces_the_dicts() -> None:
    d = {"type": "StoreSetEvent", "origin": "o", "remote": False, "key": "k"}
    assert StoreEvent.from_dict(d, remote=True).remote is True
    assert d["remote"] is False  # the dict is not changed
    assert StoreEvent.from_dict(d).remote is False


def test_a_subclass_elsewhere_goes_through_its_init() -> None:
    from dataclasses import dataclass

    calls = []

    @dataclass(frozen=True, kw_only=True)
    class Custom(events.StoreKeyEvent):
        def __post_init__(self) -> None:
            calls.append(self.key)

    try:
        event = StoreEvent.from_dict({"type": "Custom", "key": "k", "origin": "o"})
        assert type(event) is Custom and calls == ["k"]
        with pytest.raises(ValueError):
            StoreEvent.from_dict({"type": "Custom", "key": 1})
    finally:
        del events._CLASSES["Custom"]


def test_to_dict_is_the_fields_in_order() -> None:
    for name, cls in sorted(events._CLASSES.items()):
        for revision in (None, 3):
            kwargs = {"revision": revision} if "revision" in events._json_fields(cls) else {}
            event = cls(store=object(), origin="o", **kwargs)
            want = {"type": name}
            for field in events._json_fields(cls):
                if not (field == "revision" and revision is None):
                    want[field] = getattr(event, field)
            got = event.to_dict()
            assert list(got.items()) == list(want.items())
            assert StoreEvent.from_dict(got).to_dict() == got


@pytest.mark.parametrize("cls", [events.StoreKeyEvent, *events.MODIFICATION_CLASSES.values()],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("sequence,revision", [(None, None), (7, 3)])
def test_key_event_builds_what_init_builds(cls: Any, sequence: Any, revision: Any) -> None:
    store = object()
    args = dict(store=store, origin="o", timestamp=12.5, remote=True, key="k/ü", metadata={"a": [1]},
                sequence=sequence, revision=revision)
    want = cls(**args)
    got = events._key_event(cls, *args.values())
    assert type(got) is cls and got == want
    assert list(got.__dict__.items()) == list(want.__dict__.items())  # the fields, in field order
    assert got.to_dict() == want.to_dict() and got.store is store and got.source is store
    assert got.replace(key="x") == want.replace(key="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.key = "changed"  # type: ignore[misc]
