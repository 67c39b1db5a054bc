"""The one error class the Airflow side needs to know: a failure that no retry can fix.

ValueError and its kin (bad params, unknown env id, corrupt demo files, refused stats) already mean that. A stage
whose failure is not a ValueError but still cannot get better by retrying (too few demos replayed, a dataset that
does not read back, no tokenizer offline) raises a subclass of `NotRetryable`; anything else (an S3 outage, a
killed worker) is left to the task's retries.
"""

from __future__ import annotations


class NotRetryable(RuntimeError):
    """The stage failed in a way that a retry with the same inputs cannot fix; the message names the fix."""
