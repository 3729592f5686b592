"""Prices per model and what a call costs.

Prices are set in USD per 1M tokens (``model_prices``, numeric(18, 6)); here they are held
as whole picodollars (1e-12 USD) per token, which is the same number scaled by 1e6, so a
call's cost is exact integer arithmetic. The ledger records each call's cost in
picodollars (``usage_completions.cost_picodollars``); budgets count spend in
``SPEND_UNIT`` units and the API shows USD (costs) or cents (spend limits, alerts).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PICODOLLARS_PER_USD = 10**12
PICODOLLARS_PER_CENT = 10**10
# Budgets count spend in units of 1e-8 USD (a millionth of a cent): whole numbers that a
# float holds exactly up to about $90M, so the shared counters stay exact.
SPEND_UNIT = 10**4  # picodollars


@dataclass(frozen=True, slots=True)
class Price:
    """One model's price, in picodollars per token."""

    input: int
    cached_input: int
    output: int

    @classmethod
    def per_million(cls, input: Decimal, cached_input: Decimal | None, output: Decimal) -> Price:
        """From USD per 1M tokens (as stored and as the API takes them)."""
        cached = input if cached_input is None else cached_input
        return cls(_pico(input), _pico(cached), _pico(output))

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> int:
        """Picodollars for a call; ``input_tokens`` includes the cached ones (as OpenAI's
        usage counts them)."""
        return sum(self.costs(input_tokens, cached_tokens, output_tokens))

    def costs(
        self, input_tokens: int, cached_tokens: int, output_tokens: int
    ) -> tuple[int, int, int]:
        """The same, per line item: (uncached input, cached input, output)."""
        cached = min(cached_tokens, input_tokens)
        return (
            (input_tokens - cached) * self.input,
            cached * self.cached_input,
            output_tokens * self.output,
        )


def _pico(usd_per_million: Decimal) -> int:
    # numeric(18, 6) USD per 1M tokens == whole picodollars per token.
    return int(usd_per_million * 1_000_000)


def usd(picodollars: int | Decimal) -> float:
    return float(Decimal(picodollars) / PICODOLLARS_PER_USD)


def cents(picodollars: int | Decimal) -> Decimal:
    return Decimal(picodollars) / PICODOLLARS_PER_CENT


def spend_units(picodollars: int) -> int:
    """Picodollars as budget units, rounded up (a budget never undercounts)."""
    return -(-picodollars // SPEND_UNIT)
