"""The filesystem store's commit planner, alone: staged writes and index rows in, index
records and file operations out. No file and no SQLite are touched here."""

from __future__ import annotations

import pytest

from kvstore.stores.filesystem.commit import (
    Rename,
    Unlink,
    WriteData,
    WriteMeta,
    WriteOp,
    decode_files,
    encode_files,
    plan_commit,
)
from kvstore.stores.filesystem.index import KEEP_DATA

ROOT = "/nowhere/store"  # never created: the planner only names paths


def write(key, data=None, tmp=None, metadata=None, update=None):
    op = WriteOp("write", key, data_tmp=tmp, data=data, metadata=metadata, update=update)
    if metadata is not None:
        op.meta_text = "<text of the caller>"  # made once by the caller; the plan reuses it
    return op


def delete(key):
    return WriteOp("delete", key)


def records(plan):
    return [(r.kind, r.key, r.metadata, r.old, "keep" if r.data is KEEP_DATA else r.data) for r in plan.records]


def test_a_new_small_key_is_written_in_place_from_its_record():
    plan = plan_commit([write("a/b", data=b"small", metadata={"v": 1})], {"a/b": None}, ROOT)
    assert plan.files == [WriteData(f"{ROOT}/a/b.data", "a/b"), WriteMeta(f"{ROOT}/a/b.metadata", "a/b")]
    assert records(plan) == [("set", "a/b", {"v": 1}, None, b"small")]
    assert plan.records[0].text == "<text of the caller>"
    assert plan.contents == {"a/b": (b"small", "<text of the caller>")}


def test_a_new_key_without_data_is_empty_with_empty_metadata():
    plan = plan_commit([write("k")], {"k": None}, ROOT)
    assert records(plan) == [("set", "k", {}, None, b"")]
    assert plan.files == [WriteData(f"{ROOT}/k.data", "k"), WriteMeta(f"{ROOT}/k.metadata", "k")]
    assert plan.contents == {"k": (b"", "{}")}


def test_a_big_value_renames_its_staged_file():
    rows = {"k": ({"v": 1}, None, True)}
    plan = plan_commit([write("k", tmp="/tmp/1-x-0.part", metadata={"v": 2})], rows, ROOT)
    assert plan.files == [Rename("/tmp/1-x-0.part", f"{ROOT}/k.data"), WriteMeta(f"{ROOT}/k.metadata", "k")]
    assert records(plan) == [("update", "k", {"v": 2}, {"v": 1}, None)]  # None: in its file only


def test_a_big_value_replaced_by_a_small_one_is_unlinked_first():
    rows = {"k": ({"v": 1}, None, False)}  # not inline: a reader may hold the file open
    plan = plan_commit([write("k", data=b"tiny")], rows, ROOT)
    assert plan.files == [Unlink(f"{ROOT}/k.data"), WriteData(f"{ROOT}/k.data", "k")]
    metadata = rows["k"][0]
    assert plan.records[0].metadata is metadata  # kept: the very object, so no metadata write


def test_a_metadata_update_merges_and_writes_only_the_metadata_file():
    current = {"a": 1, "b": 2}
    plan = plan_commit([write("k", update={"b": 3, "c": 4})], {"k": (current, None, True)}, ROOT)
    assert plan.files == [WriteMeta(f"{ROOT}/k.metadata", "k")]
    assert records(plan) == [("update", "k", {"a": 1, "b": 3, "c": 4}, current, "keep")]
    assert plan.records[0].text == '{"a": 1, "b": 3, "c": 4}'
    assert plan.contents == {"k": (None, '{"a": 1, "b": 3, "c": 4}')}  # its data is kept in place


def test_updating_a_missing_key_and_deleting_one_raise_key_error():
    with pytest.raises(KeyError):
        plan_commit([write("k", update={"a": 1})], {"k": None}, ROOT)
    with pytest.raises(KeyError):
        plan_commit([delete("k")], {"k": None}, ROOT)


def test_a_delete_unlinks_both_files_where_they_are():
    current = {"v": 1}
    plan = plan_commit([delete("Legacy Name")], {"Legacy Name": (current, "old/Legacy Name", False)}, ROOT)
    assert plan.files == [Unlink(f"{ROOT}/old/Legacy Name.data"), Unlink(f"{ROOT}/old/Legacy Name.metadata")]
    assert records(plan) == [("delete", "Legacy Name", current, current, "keep")]
    assert plan.contents == {}


def test_a_key_stored_under_a_recorded_name_is_written_there():
    plan = plan_commit([write("Legacy Name", data=b"x")], {"Legacy Name": ({}, "Legacy Name", True)}, ROOT)
    assert plan.files == [WriteData(f"{ROOT}/Legacy Name.data", "Legacy Name")]


def test_ops_of_one_commit_see_each_other_in_order():
    ops = [write("x", data=b"1", metadata={"s": 1}), write("x", update={"s": 2}),
           write("y", tmp="/t/y.part", metadata={}), delete("x"), write("x", update={"s": 3})]
    with pytest.raises(KeyError):  # x is gone by the last op: the whole commit fails
        plan_commit(ops, {"x": None, "y": None}, ROOT)
    plan = plan_commit(ops[:-1], {"x": None, "y": None}, ROOT)
    assert [(r.kind, r.key, r.metadata) for r in plan.records] == [
        ("set", "x", {"s": 1}), ("update", "x", {"s": 2}), ("set", "y", {}), ("delete", "x", {"s": 2})]
    assert plan.files == [
        WriteData(f"{ROOT}/x.data", "x"), WriteMeta(f"{ROOT}/x.metadata", "x"),
        WriteMeta(f"{ROOT}/x.metadata", "x"),
        Rename("/t/y.part", f"{ROOT}/y.data"), WriteMeta(f"{ROOT}/y.metadata", "y"),
        Unlink(f"{ROOT}/x.data"), Unlink(f"{ROOT}/x.metadata")]
    # what x's in-place writes write is its last content (a replay finds the row gone instead)
    assert plan.contents["x"] == (b"1", '{"s": 2}')
    assert plan.contents["y"] == (None, "<text of the caller>")


def test_a_write_after_a_delete_in_one_commit_is_a_set():
    plan = plan_commit([delete("k"), write("k", data=b"again")], {"k": ({"v": 1}, None, True)}, ROOT)
    assert [(r.kind, r.metadata) for r in plan.records] == [("delete", {"v": 1}), ("set", {})]


def test_the_planner_does_not_change_the_rows_it_is_given():
    current = {"v": 1}
    rows = {"k": (current, None, True)}
    plan_commit([write("k", update={"w": 2}), delete("k")], rows, ROOT)
    assert rows == {"k": ({"v": 1}, None, True)} and rows["k"][0] is current


def test_file_operations_encode_as_the_journal_lists_them_and_decode_back():
    ops = [Rename("/s/.kvstore/tmp/1-a-0.part", "/s/k.data"), Unlink("/s/k.data"),
           WriteData("/s/k.data", "k"), WriteMeta("/s/k.metadata", "k")]
    text = encode_files(ops)
    assert text == ('[["rename", "/s/.kvstore/tmp/1-a-0.part", "/s/k.data"], ["unlink", "/s/k.data", null], '
                    '["data", "/s/k.data", "k"], ["meta", "/s/k.metadata", "k"]]')
    assert decode_files(text) == ops
    with pytest.raises(ValueError, match="unknown file operation"):
        decode_files('[["chmod", "/s/k.data", null]]')


def test_a_first_write_leaves_alone_the_files_it_would_not_change():
    row = ({"v": 1}, None, True)
    held = {"k": (b"same", '{"v": 1}')}
    # the same bytes and the same metadata text: nothing to write
    op = WriteOp("write", "k", data=b"same", metadata={"v": 1}, meta_text='{"v": 1}')
    assert plan_commit([op], {"k": row}, ROOT, held=held).files == []
    # new metadata only: the metadata file
    op = WriteOp("write", "k", data=b"same", metadata={"v": 2}, meta_text='{"v": 2}')
    assert plan_commit([op], {"k": row}, ROOT, held=held).files == [WriteMeta(f"{ROOT}/k.metadata", "k")]
    # new bytes only: the data file
    op = WriteOp("write", "k", data=b"other", metadata={"v": 1}, meta_text='{"v": 1}')
    assert plan_commit([op], {"k": row}, ROOT, held=held).files == [WriteData(f"{ROOT}/k.data", "k")]
    # a big value (no inline bytes held) replaced by small bytes: unlinked and written
    op = WriteOp("write", "k", data=b"same", metadata={"v": 1}, meta_text='{"v": 1}')
    assert plan_commit([op], {"k": ({"v": 1}, None, False)}, ROOT, held={"k": (None, '{"v": 1}')}).files == [
        Unlink(f"{ROOT}/k.data"), WriteData(f"{ROOT}/k.data", "k")]
    # a later write of the key in the same commit: written whatever the files held before
    ops = [WriteOp("write", "k", data=b"x", metadata={"v": 3}, meta_text='{"v": 3}'),
           WriteOp("write", "k", data=b"same", metadata={"v": 1}, meta_text='{"v": 1}')]
    assert plan_commit(ops, {"k": row}, ROOT, held=held).files == [
        WriteData(f"{ROOT}/k.data", "k"), WriteMeta(f"{ROOT}/k.metadata", "k"),
        WriteData(f"{ROOT}/k.data", "k"), WriteMeta(f"{ROOT}/k.metadata", "k")]
