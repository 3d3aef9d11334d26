"""The client side of a distributed job: the Dask client, and the submission of tasks with
unique keys (``xmrrs-<name>-<token>``), retries and priorities, gathered with optional
``distributed.progress`` bars."""

from __future__ import annotations

import uuid
from typing import Any


def _client(client: Any) -> Any:
    if client is not None:
        return client
    from distributed import get_client

    return get_client()


def _is_delayed(obj: Any) -> bool:
    from dask.base import is_dask_collection

    return bool(is_dask_collection(obj))


class _Run:
    """Submits tasks with unique keys, retries and priorities; keeps their futures."""

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries
        self.token = uuid.uuid4().hex[:8]

    def submit(self, name: str, fn: Any, *args: Any, priority: int = 0) -> Any:
        return self.client.submit(
            fn,
            *args,
            key=f"xmrrs-{name}-{self.token}",
            retries=self.retries,
            priority=priority,
            pure=False,
        )

    def gather(self, futures: Any, progress: bool) -> Any:
        if progress:
            from distributed import progress as bar

            bar(futures)  # type: ignore[no-untyped-call]
        return self.client.gather(futures)
