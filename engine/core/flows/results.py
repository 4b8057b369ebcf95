"""A step's view of the results before it: decoded when read, not when the step starts, so
that step 1,000 of a long flow costs what step 10 of a short one does."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload


class ResultsView(Sequence[Any]):
    """The first `upto` stored results, each decoded with `decode` the first time it is
    read (then kept). It reads like the list it stands for: `len`, indexes, slices (lists),
    iteration, `==` with a list, `+`, and `list(view)`. `stored` is the stored results or a
    function that reads them, called when an item is first read."""

    __slots__ = ("_stored", "_read", "_decode", "_upto", "_decoded")

    def __init__(
        self,
        stored: Sequence[Any] | Callable[[], Sequence[Any]],
        decode: Callable[[Any], Any],
        upto: int,
    ) -> None:
        self._read = stored if callable(stored) else None
        self._stored: Sequence[Any] = () if callable(stored) else stored
        self._decode = decode
        self._upto = max(0, upto)
        self._decoded: dict[int, Any] = {}

    def __len__(self) -> int:
        return self._upto

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._upto))]
        if index < 0:
            index += self._upto
        if not 0 <= index < self._upto:
            raise IndexError("result index out of range")
        if index not in self._decoded:
            if self._read is not None:
                self._stored, self._read = self._read(), None
            stored = self._stored[index] if index < len(self._stored) else None
            self._decoded[index] = self._decode(stored)
        return self._decoded[index]

    def __iter__(self) -> Iterator[Any]:
        for index in range(self._upto):
            yield self[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultsView | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    # Unhashable, as the list it stands for.
    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Sequence[Any]) -> list[Any]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[Any]) -> list[Any]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return repr(list(self))
