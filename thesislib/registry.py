"""Named, typed registries (in the style of timm's model registry): pruning methods, capacity estimators.

A :class:`Registry` maps names to entries in registration order; it is read like a ``Mapping`` and
written only through :meth:`Registry.register`, which refuses a name already taken or an entry of the
wrong type, so lists such as ``pruning.METHODS`` can be derived from it instead of kept by hand.
"""

from __future__ import annotations

from typing import Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of type ``item_type`` by their ``name`` attribute.

    ``kind`` names the entries in errors (``"pruning method"``); ``unknown`` is the message of
    :meth:`lookup` for a name that is not registered, formatted with ``name`` and ``names``.
    """

    def __init__(self, kind: str, item_type: type[T], unknown: str = "unknown {kind} {name!r}: choose one of {names}"):
        self.kind, self.item_type, self._unknown = kind, item_type, unknown
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        """Add ``item`` under ``item.name`` (``ValueError`` for a wrong type or a name taken); returns it."""
        if not isinstance(item, self.item_type):
            raise ValueError(f"a {self.kind} registry takes a {self.item_type.__name__}, got {type(item).__name__}")
        name = getattr(item, "name")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (``KeyError`` when absent)."""
        return self._items.pop(name)

    def lookup(self, name: object) -> T:
        """The entry called ``name``; a ``ValueError`` listing the registered names otherwise."""
        if not isinstance(name, str) or name not in self._items:
            raise ValueError(self._unknown.format(kind=self.kind, name=name, names=", ".join(self._items)))
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
