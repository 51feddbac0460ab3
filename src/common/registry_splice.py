"""The registry file as a writer sees it, and the splices that change it.

A writer either trusts the index (IndexedFile: the bytes are copied in the kernel, only spans are looked up) or
has read and validated the whole file (ParsedFile: the bytes come from memory). Either way a change is one
splice, new file = old[:start] + insert + old[end:], plus the update that brings an index of the old file to the
new one; whole_plan is the fallback that writes every entry.
"""

import os
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional

from src.common.registry_format import dump_entry, entry_problem, loads_trusted
from src.common.registry_index import Identity, Index, IndexUnusable, Loc, identity_of

SEP = b",\n  "  # between two entries, one per line
_CHUNK = 1 << 20


class FileChanged(Exception):
    """The file changed while a writer that trusted the index was copying it (a writer ignoring the lock)."""


class Splice(NamedTuple):
    """New file = old[:start] + insert + old[end:]; `update` brings an index of the old file up to date."""

    start: int
    end: int
    insert: bytes
    update: Callable[[Index], None]
    body_end: int
    count: int
    whole: bool = False  # the update rebuilds the index rather than editing an index of the old file


class ParsedFile:
    """The current file, read and validated in full."""

    def __init__(self, raw: bytes, entries: List[dict], spans, body_end):
        self.raw, self._entries, self.spans, self.body_end = raw, entries, spans, body_end
        self.size, self.count, self.max_pos = len(raw), len(entries), len(entries) - 1
        self.can_splice = spans is not None
        self._pos = {e["run_id"]: i for i, e in enumerate(entries)}

    def entries(self) -> List[dict]:
        return self._entries

    def present(self, run_ids) -> bool:
        return any(r in self._pos for r in run_ids)

    def locate(self, run_id: str) -> Optional[Loc]:
        i = self._pos.get(run_id)
        if i is None:
            return None
        prev_end = sum(self.spans[i - 1]) if i else None
        next_offset = self.spans[i + 1][0] if i + 1 < len(self.spans) else None
        return Loc(i, *self.spans[i], prev_end, next_offset)

    def entry(self, loc: Loc, run_id: str) -> dict:
        return self._entries[loc.pos]

    def copy_to(self, out: int, offset: int, length: int) -> None:
        write_all(out, memoryview(self.raw)[offset:offset + length])

    def check_unchanged(self) -> None:
        pass  # the bytes come from memory: what was validated is what gets written


class IndexedFile:
    """The current file as the index describes it (trusted: its identity is sealed and unchanged)."""

    can_splice = True

    def __init__(self, fd: int, ident: Identity, index: Index, path: Path):
        self.fd, self.ident, self.index, self.path = fd, ident, index, path
        self.size, self.body_end, self.count = ident.size, index.body_end(), index.count()
        self.max_pos = index.max_pos()

    def entries(self) -> List[dict]:
        return trusted_entries(read_all(self.fd), self.count)

    def present(self, run_ids) -> bool:
        return self.index.present(run_ids)

    def locate(self, run_id: str) -> Optional[Loc]:
        return self.index.locate(run_id)

    def entry(self, loc: Loc, run_id: str) -> dict:
        return read_entries(self.fd, [(run_id, loc.offset, loc.length)], self.size)[0]

    def copy_to(self, out: int, offset: int, length: int) -> None:
        copy_range(self.fd, out, offset, length)

    def check_unchanged(self) -> None:
        st = os.stat(self.path)
        if identity_of(self.fd) != self.ident or (st.st_dev, st.st_ino) != self.ident.inode:
            raise FileChanged()


def append_plan(base, entries: List[dict]) -> Splice:
    lines = [dump_entry(e) for e in entries]
    sep = SEP if base.count else b"\n  "
    spans, offset = [], base.body_end + len(sep)
    for line in lines:
        spans.append((offset, len(line)))
        offset += len(line) + len(SEP)
    first = base.max_pos + 1

    def update(index: Index) -> None:
        index.add(list(enumerate(entries, first)), spans)

    return Splice(base.body_end, base.size, sep + SEP.join(lines) + b"\n]\n", update, sum(spans[-1]),
                   base.count + len(entries))


def replace_plan(base, loc: Loc, entry: dict) -> Splice:
    line = dump_entry(entry)
    old = base.entry(loc, entry["run_id"])
    delta = len(line) - loc.length

    def update(index: Index) -> None:
        index.drop(loc.pos, old)
        index.add([(loc.pos, entry)], [(loc.offset, len(line))])
        index.shift(loc.pos, delta)

    return Splice(loc.offset, loc.offset + loc.length, line, update, base.body_end + delta, base.count)


def remove_plan(base, loc: Loc, run_id: str) -> Splice:
    old = base.entry(loc, run_id)
    if loc.prev_end is None:  # the first entry: take the separator after it
        start, end = loc.offset, loc.next_offset
    else:
        start, end = loc.prev_end, loc.offset + loc.length

    def update(index: Index) -> None:
        index.drop(loc.pos, old)
        index.shift(loc.pos, start - end)

    return Splice(start, end, b"", update, base.body_end - (end - start), base.count - 1)


def whole_plan(entries: List[dict], base) -> Splice:
    lines = [dump_entry(e) for e in entries]
    spans, offset = [], 4  # len(b"[\n  ")
    for line in lines:
        spans.append((offset, len(line)))
        offset += len(line) + len(SEP)
    data = b"[\n  " + SEP.join(lines) + b"\n]\n" if lines else b"[]\n"

    def update(index: Index) -> None:
        index.rebuild(entries, spans)

    size = base.size if base is not None else 0
    return Splice(0, size, data, update, sum(spans[-1]) if spans else 1, len(entries), whole=True)


# ---- bytes ---------------------------------------------------------------------------------------------------
def read_entries(fd: int, spans, size: int) -> List[dict]:
    """The entries at these (run_id, offset, length) spans of a trusted file; IndexUnusable if they are not."""
    if not spans:
        return []
    if len(spans) > 64:  # many entries: one read of the file beats a read each
        raw = memoryview(read_all(fd))
        chunks = [raw[o:o + n] for _, o, n in spans]
    else:
        chunks = [os.pread(fd, n, o) for _, o, n in spans]
    try:
        entries = loads_trusted((b"[" + b",".join(chunks) + b"]").decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise IndexUnusable(f"entries do not read back: {exc}") from None
    if len(entries) != len(spans) or any(
            not isinstance(e, dict) or e.get("run_id") != rid for e, (rid, _, _) in zip(entries, spans)):
        raise IndexUnusable("entries do not read back as indexed")
    if len(spans) == 1 and entry_problem(entries[0]):
        raise IndexUnusable("entry does not read back as indexed")
    return entries


def copy_range(src: int, out: int, offset: int, length: int) -> None:
    """Append `length` bytes of `src` from `offset` to `out`, in the kernel where it can."""
    end = offset + length
    while offset < end:
        try:
            n = os.copy_file_range(src, out, min(end - offset, 1 << 30), offset)
        except OSError:  # not supported here (another filesystem, old kernel): copy through memory
            n = _copy_through_memory(src, out, offset, end)
        if n == 0:
            raise FileChanged()  # the file ended early: it was truncated under us
        offset += n


def _copy_through_memory(src: int, out: int, offset: int, end: int) -> int:
    data = os.pread(src, min(end - offset, _CHUNK), offset)
    write_all(out, data)
    return len(data)


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, max(size - offset, 0) + 1, offset)  # +1: notice a file that grew
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def trusted_entries(raw: bytes, count: int) -> List[dict]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IndexUnusable(f"file does not read back: {exc}") from None
    return trusted_list(text, count)


def trusted_list(text: str, count: int) -> list:
    try:
        items = loads_trusted(text)
    except (ValueError, RecursionError) as exc:
        raise IndexUnusable(f"does not read back: {exc}") from None
    if not isinstance(items, list) or len(items) != count:
        raise IndexUnusable("count differs from the index")
    return items
