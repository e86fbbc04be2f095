"""The verdict of the resilience suite: this module owns the bounded wait until every transfer is final, the
checks (nothing acknowledged and lost, nothing stuck, money conserved, every outcome consistent with the
bank's books and with what the client was told) and the figures printed at the end of the run."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .bank_service import ChaosBank
from .chaos import Chaos, Event
from .coordinator import UNKNOWN, Coordinator
from .transfers import Transfer

TERMINAL: Final = frozenset({"succeed", "failed"})


def settle(transfers: Sequence[Transfer], bases: Sequence[str], timeout: float) -> dict[str, str | None]:
    """Poll /query until every gid is final (succeed, failed, or unknown to the coordinator) or `timeout`
    passes; returns each gid's last status (UNKNOWN if no node ever answered for it)."""
    coordinator = Coordinator(bases)
    final: dict[str, str | None] = {t.gid: UNKNOWN for t in transfers}
    pending = set(final)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            for gid in sorted(pending):
                final[gid] = status = coordinator.lookup(gid)
                if status is None or status in TERMINAL:
                    pending.discard(gid)
            if pending:
                time.sleep(0.5)
        # A request a node still held when its client gave up could store its gid late: ask once more.
        for gid in [gid for gid, status in final.items() if status is None]:
            final[gid] = coordinator.lookup(gid)
    finally:
        coordinator.close()
    return final


@dataclass
class Verdict:
    transfers: int = 0
    acknowledged: int = 0
    succeeded: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    money_total: int = 0
    money_expected: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    #: What the clients went through (aborts, replies lost and found by query, senders that died).
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def money_conserved(self) -> bool:
        return self.money_total == self.money_expected

    def failures(self) -> list[str]:
        out = [f"lost (acknowledged, unknown to the coordinator): {self.lost}"] if self.lost else []
        out += [f"stuck (not final in time): {self.stuck}"] if self.stuck else []
        if not self.money_conserved:
            out.append(f"money not conserved: total {self.money_total}, expected {self.money_expected}")
        out += [f"inconsistent outcomes: {self.inconsistent}"] if self.inconsistent else []
        return out


def judge(transfers: Sequence[Transfer], final: dict[str, str | None], bank: ChaosBank) -> Verdict:
    verdict = Verdict(transfers=len(transfers), money_total=bank.total(), money_expected=bank.opening_total)
    for transfer in transfers:
        _judge_one(verdict, transfer, final[transfer.gid], bank)
    verdict.inconsistent += bank.books.anomalies
    return verdict


def _judge_one(verdict: Verdict, transfer: Transfer, status: str | None, bank: ChaosBank) -> None:
    gid = transfer.gid
    verdict.by_kind[f"{transfer.kind}:{status}"] += 1
    verdict.notes.update(transfer.notes)
    if transfer.acknowledged:
        verdict.acknowledged += 1
        verdict.succeeded += status == "succeed"
        verdict.failed += status == "failed"
        if status is None:
            verdict.lost.append(gid)
    if status is not None and status not in TERMINAL:
        verdict.stuck.append(f"{gid} ({status})")
        return
    moved = bank.moved(gid)
    applied = (-transfer.amount, transfer.amount) if status == "succeed" else (0, 0)
    if moved != applied:
        verdict.inconsistent.append(f"{gid}: {status} but the bank moved {moved}, expected {applied}")
    if status is not None and status not in transfer.expected:
        wanted = sorted(transfer.expected)
        verdict.inconsistent.append(f"{gid}: ended {status}, the client expects {wanted} {transfer.notes}")


def summary(verdict: Verdict, bank: ChaosBank, chaos: Chaos, profile: str, seed: int) -> str:
    books = bank.books
    money = "money conserved" if verdict.money_conserved else "money NOT conserved"
    head = (
        f"resilience: profile {profile} transfers {verdict.transfers} acknowledged {verdict.acknowledged}"
        f" succeeded {verdict.succeeded} failed {verdict.failed} lost {len(verdict.lost)}"
        f" stuck {len(verdict.stuck)} {money} (total {verdict.money_total}) inconsistent"
        f" {len(verdict.inconsistent)} duplicates {books.duplicates} node kills {chaos.counts[Event.NODE_KILL]}"
        f" sigterm {chaos.counts[Event.NODE_SIGTERM]} redis failovers {chaos.redis_failovers}"
        f" (kill -9 {chaos.counts[Event.MASTER_KILL]}) pauses {chaos.counts[Event.PAUSE]} seed {seed}"
    )
    faults = ", ".join(f"{fault} {n}" for fault, n in sorted(books.faults.items()) if fault != "none")
    lines = [
        head,
        f"  bank: calls {books.calls} faults [{faults}] refusals (409) {books.refusals}"
        f" null compensations {books.null_compensations} suspended {books.suspended}",
        "  outcomes: " + ", ".join(f"{key} {n}" for key, n in sorted(verdict.by_kind.items())),
        "  clients: " + ", ".join(f"{note} {n}" for note, n in sorted(verdict.notes.items())),
        "  chaos: " + "; ".join(f"{at}s {what}" for at, what in chaos.log),
    ]
    return "\n".join(lines)
