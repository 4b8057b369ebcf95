"""Demo Labeled Transition Models for the studio's LTM pages.

`OrderProcess`: an order is received, three checks run in parallel (a fork) and are joined
with `atomic_state_append` when all have reported; the order then ships through a
sub-machine and waits for an operator to confirm delivery (`fire_transition("confirm")`).

`FileImport`: one parameterised state per file (`import_{file_id}`), joined the same way.
"""

from __future__ import annotations

from typing import Any

from engine import LTM

CHECKS = ("stock", "payment", "fraud")


class ReceiveOrder(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"checks": [], "received": True})
        self.transition("check")


class _Check(LTM):
    check = ""

    def run(self, **payload: Any) -> None:
        # Each check reports at once; whoever completes the list moves the order on.
        reported = self.root.atomic_state_append("checks", self.check)
        self.update_state({"ok": True})
        if len(reported) == len(CHECKS):
            self.transition("checked")


class CheckStock(_Check):
    check = "stock"


class CheckPayment(_Check):
    check = "payment"


class CheckFraud(_Check):
    check = "fraud"


class Pack(LTM):
    def run(self, **payload: Any) -> None:
        self.update_state({"parcels": 1})
        self.transition("packed")


class Dispatch(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"tracking": f"TRK-{self.root.state.get('order', '')}"})
        ship = self.parent  # Dispatch runs inside Ship: it always has a parent
        assert ship is not None
        ship.transition("shipped")


class Ship(LTM):
    """A sub-machine: pack, then dispatch; its end moves the order on."""

    init = [Pack]
    transitions = [{"from": Pack, "label": "packed", "to": Dispatch}]


class AwaitConfirmation(LTM):
    """Waits (stays active) until an operator fires `confirm`."""


class Delivered(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"delivered": True, "confirmation": payload})


class OrderProcess(LTM):
    name = "order_process"
    init = [ReceiveOrder]
    transitions = [
        {"from": ReceiveOrder, "label": "check", "to": (CheckStock, CheckPayment, CheckFraud)},
        {"from": (CheckStock, CheckPayment, CheckFraud), "label": "checked", "to": Ship},
        {"from": Ship, "label": "shipped", "to": AwaitConfirmation},
        {"from": AwaitConfirmation, "label": "confirm", "to": Delivered},
    ]

    def run(self, order: str = "demo-order", **payload: Any) -> None:
        self.update_state({"order": order})


class ListFiles(LTM):
    def run(self, **payload: Any) -> None:
        files = self.root.state["files"]
        self.transition("import", params=[{"file_id": file_id} for file_id in files])


class ImportFile(LTM):
    name = "import_{file_id}"

    def run(self, **payload: Any) -> None:
        done = self.root.atomic_state_append("imported", self.params["file_id"])
        self.update_state({"rows": 10 * len(str(self.params["file_id"]))})
        if len(done) == len(self.root.state["files"]):
            self.transition("imported")


class Summarise(LTM):
    def run(self, **payload: Any) -> None:
        self.root.update_state({"summary": f"{len(self.root.state['imported'])} files imported"})


class FileImport(LTM):
    name = "file_import"
    init = [ListFiles]
    transitions = [
        {"from": ListFiles, "label": "import", "to": ImportFile},
        {"from": ImportFile, "label": "imported", "to": Summarise},
    ]

    def run(self, files: list[Any] | None = None, **payload: Any) -> None:
        self.update_state({"files": list(files or ["a", "b", "c"]), "imported": []})
