"""The root filesystem model: whiteouts, opaque folders, replacement and the same-layer rule."""

from __future__ import annotations

from attestgate.intake.rootfs import (
    DELETED,
    DIRECTORY,
    FILE,
    HARDLINK,
    REPLACED,
    FsEntry,
    LayerChanges,
    RootFilesystem,
    link_escapes,
    normalize_member_name,
)


def layer(index: int, *files: str, whiteouts=(), opaque=()) -> LayerChanges:
    changes = LayerChanges(list(whiteouts), list(opaque))
    for path in files:
        kind = DIRECTORY if path.endswith("/") else FILE
        changes.entries.append((path.rstrip("/"), FsEntry(index, kind, b"d%d" % index, 1)))
    return changes


def test_whiteout_deletes_lower_file() -> None:
    fs = RootFilesystem()
    fs.watch(0, "/etc/secret")
    fs.apply(0, layer(0, "/etc/secret", "/etc/keep"))
    fs.apply(1, layer(1, whiteouts=["/etc/secret"]))
    assert fs.lookup("/etc/secret") is None
    assert fs.lookup("/etc/keep") is not None
    assert fs.removals[0].how == DELETED
    assert fs.removals[0].by_layer == 1


def test_whiteout_spares_same_layer_entry() -> None:
    fs = RootFilesystem()
    fs.apply(0, layer(0, "/a"))
    fs.apply(1, layer(1, "/a", whiteouts=["/a"]))
    entry = fs.lookup("/a")
    assert entry is not None
    assert entry.layer == 1


def test_opaque_hides_lower_children_only() -> None:
    fs = RootFilesystem()
    fs.apply(0, layer(0, "/opt/", "/opt/old", "/opt/sub/deep"))
    fs.apply(1, layer(1, "/opt/new", opaque=["/opt"]))
    assert fs.lookup("/opt/old") is None
    assert fs.lookup("/opt/sub/deep") is None
    assert fs.lookup("/opt/new") is not None


def test_deleted_directory_removes_subtree() -> None:
    fs = RootFilesystem()
    fs.watch(0, "/d/x/y")
    fs.apply(0, layer(0, "/d/x/y"))
    fs.apply(1, layer(1, whiteouts=["/d"]))
    assert fs.lookup("/d/x/y") is None
    assert [r.path for r in fs.removals] == ["/d/x/y"]


def test_file_replaced_by_later_layer() -> None:
    fs = RootFilesystem()
    fs.watch(0, "/app/model.pkl")
    fs.apply(0, layer(0, "/app/model.pkl"))
    fs.apply(2, layer(2, "/app/model.pkl"))
    assert fs.removals[0].how == REPLACED
    assert fs.lookup("/app/model.pkl").layer == 2


def test_directory_merges_with_lower_directory() -> None:
    fs = RootFilesystem()
    fs.apply(0, layer(0, "/usr/", "/usr/bin/python"))
    fs.apply(1, layer(1, "/usr/"))
    assert fs.lookup("/usr/bin/python") is not None


def test_hardlink_takes_target_digest() -> None:
    fs = RootFilesystem()
    changes = layer(0, "/bin/a")
    changes.entries.append(("/bin/b", FsEntry(0, HARDLINK, link="/bin/a")))
    fs.apply(0, changes)
    assert fs.lookup("/bin/b").digest == b"d0"


def test_files_lists_final_view() -> None:
    fs = RootFilesystem()
    fs.apply(0, layer(0, "/a", "/b"))
    fs.apply(1, layer(1, whiteouts=["/a"]))
    assert [path for path, _ in fs.files()] == ["/b"]


def test_normalize_member_names() -> None:
    assert normalize_member_name("./usr/bin/x") == ("/usr/bin/x", False)
    assert normalize_member_name("/etc//passwd") == ("/etc/passwd", False)
    assert normalize_member_name("a/../../etc/passwd") == ("/etc/passwd", True)
    assert normalize_member_name("a/b/../c") == ("/a/c", False)


def test_link_escape() -> None:
    assert link_escapes("/usr/lib/x", "../../../etc/shadow")
    assert not link_escapes("/usr/lib/x", "../../bin/python")
    assert not link_escapes("/usr/lib/x", "/etc/shadow")
