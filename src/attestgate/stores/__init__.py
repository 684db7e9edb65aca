"""Content-addressed trusted and quarantine stores, promotion and the quarantine queue.

Layout under the state directory ``HOME``::

    HOME/store/trusted/sha256/<first two hex digits>/<digest>/
        artifact/...        the artifact's files, byte for byte, at their relative paths
                            (a single-file artifact keeps its file name)
        manifest.json       every file's relative path, size and SHA-256
    HOME/store/quarantine/sha256/<ab>/<digest>/
        artifact/...        as above
        manifest.json
        record.json         the decision record that quarantined it
    HOME/store/.tmp/        promotions in progress; removed by :func:`fsck`

A directory under ``sha256/`` is either complete or absent: it is built
under ``.tmp`` and published with one ``rename``, after its audit record
was appended.

The quarantine queue (what is queued, and each review) is the
``quarantine_queue`` table in the gate's database; see
:mod:`attestgate.stores.queue`.
"""

from attestgate.stores.local import ContentStore, StoreError, fsck, store_root
from attestgate.stores.promote import Promotion, act_on_admission, promote
from attestgate.stores.queue import QueueItem, approve, list_queue, reject, show
from attestgate.stores.reconcile import Reconciliation, reconcile

__all__ = [
    "ContentStore",
    "Promotion",
    "QueueItem",
    "Reconciliation",
    "StoreError",
    "act_on_admission",
    "approve",
    "fsck",
    "list_queue",
    "promote",
    "reconcile",
    "reject",
    "show",
    "store_root",
]
