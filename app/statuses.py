"""The statuses a task goes through, named once for the schema, the queries, the CLI, the API and the pages."""

from __future__ import annotations

TASK_STATUSES = ("pending", "running", "completed", "failed", "error")
OPEN_TASK_STATUSES = ("pending", "running")  # not over yet: it can still be claimed, run or cancelled
