"""An operation class is checked when it is defined: process() or perform(), exactly one, and a
misspelt attribute name is an error naming the right one, not a silently ignored setting."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.errors import OperationDefinitionError
from dramatiq_bbo.operation import registered, unregister


def process(self: Any, sub_batch: Any) -> None:
    """A process() to put in a class namespace."""


def perform(self: Any) -> None:
    """A perform() to put in a class namespace."""


@pytest.fixture
def define() -> Iterator[Any]:
    """``define(namespace, bases=())``: a BaseOperation subclass, forgotten afterwards."""
    defined: list[str] = []

    def make(namespace: dict[str, Any], bases: tuple[type, ...] = ()) -> Any:
        name = f"DefinitionCase{len(defined)}"
        namespace = {"name": f"tests.definition.{name}", **namespace}
        defined.append(namespace["name"])
        return type(name, (*bases, bbo.BaseOperation), namespace)

    yield make
    for name in defined:
        unregister(name)


# -- typos -------------------------------------------------------------------------------------
def test_interval_instead_of_interval_seconds_fails_at_definition_naming_interval_seconds(
    define: Any,
) -> None:
    with pytest.raises(OperationDefinitionError, match="'interval_seconds'") as caught:
        define({"interval": 0, "process": process})
    assert "'interval'" in str(caught.value) and "DefinitionCase0" in str(caught.value)
    assert "tests.definition.DefinitionCase0" not in registered()


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("pause", "pause_ms"),
        ("batch", "batch_size"),
        ("sub_batch", "sub_batch_size"),
        ("max_batch", "max_batch_size"),
        ("min_batch", "min_batch_size"),
        ("interval_ms", "interval_seconds"),
        ("batchsize", "batch_size"),
        ("BatchSize", "batch_size"),
        ("subbatch_size", "sub_batch_size"),
        ("batch_sizes", "batch_size"),
        ("batch_sise", "batch_size"),
        ("min_batch_sise", "min_batch_size"),
        ("intreval_seconds", "interval_seconds"),
        ("interval_second", "interval_seconds"),
        ("pause_mss", "pause_ms"),
        ("curser", "cursor"),
        ("cursors", "cursor"),
        ("tabels", "tables"),
        ("databse", "database"),
        ("modle", "model"),
        ("feature_categroy", "feature_category"),
        ("opertion_name", "operation_name"),
    ],
)
def test_a_misspelt_class_attribute_fails_at_definition_naming_the_right_one(
    define: Any, wrong: str, right: str
) -> None:
    with pytest.raises(OperationDefinitionError, match=f"did you mean '{right}'"):
        define({wrong: 1, "process": process})


@pytest.mark.parametrize(
    ("namespace", "right"),
    [
        ({"scop": perform, "process": process}, "scope"),
        ({"scoep": perform, "process": process}, "scope"),
        ({"preform": perform}, "perform"),
        ({"proces": process}, "process"),
    ],
    ids=["scop", "scoep", "preform", "proces"],
)
def test_a_misspelt_method_fails_at_definition_naming_the_right_one(
    define: Any, namespace: dict[str, Any], right: str
) -> None:
    # the typo is reported, not the missing process() or perform() it causes
    with pytest.raises(OperationDefinitionError, match=f"did you mean '{right}'"):
        define(namespace)


def test_a_typo_in_a_mixin_outside_the_operation_hierarchy_fails_too(define: Any) -> None:
    class Pacing:
        pause = 0

    with pytest.raises(OperationDefinitionError, match="did you mean 'pause_ms'"):
        define({"process": process}, bases=(Pacing,))


def test_attributes_and_methods_of_the_authors_own_are_accepted(define: Any) -> None:
    class Helpers:
        archive_table = "archive"

        def rows_to_archive(self) -> int:
            return 0

    cls = define(
        {
            "process": process,
            "cutoff": "2024-01-01",
            "statuses": (1, 2),
            "visits_column": "visits",
            "processed": 0,  # extends process: a deliberate name, not a typo
            "sub_batches_seen": 0,
            "scope_for": perform,
            "_interval": 5,  # private names are never checked
            "helper": staticmethod(lambda: None),
            "build": classmethod(lambda cls: None),
            "label": property(lambda self: "x"),
            "Meta": type("Meta", (), {}),
        },
        bases=(Helpers,),
    )
    assert registered()[cls.name] is cls


def test_every_attribute_a_class_may_set_is_accepted(define: Any) -> None:
    cls = define(
        {
            "operation_name": "delete_all",
            "feature_category": "tests",
            "cursor": ("id",),
            "database": "main",
            "model": None,
            "tables": ("todos",),
            "batch_size": 1000,
            "sub_batch_size": 100,
            "pause_ms": 0,
            "interval_seconds": 0,
            "min_batch_size": 10,
            "max_batch_size": 10_000,
            "scope": lambda self, query: query,
            "process": process,
        }
    )
    assert (cls.interval_seconds, cls.pause_ms, cls.cursor) == (0, 0, ("id",))


@pytest.mark.parametrize(
    "module",
    [
        "dramatiq_bbo.demo.operation",
        "tests.acceptance.killable_operation",
        "tests.acceptance.pipeline_operations",
        "tests.faults.fault_operations",
        "benchmarks.operations",
        "benchmarks.throttle",
    ],
)
def test_the_operations_of_the_demo_tests_and_benchmarks_still_define(module: str) -> None:
    defined = importlib.import_module(module)
    classes = [
        value
        for value in vars(defined).values()
        if isinstance(value, type)
        and issubclass(value, bbo.BaseOperation)
        and value.__module__ == module
    ]
    assert classes, f"{module} defines no operation class"
    for cls in classes:
        assert registered()[cls.name] is cls


# -- process() or perform() --------------------------------------------------------------------
def test_a_class_with_neither_process_nor_perform_fails_naming_both(define: Any) -> None:
    with pytest.raises(OperationDefinitionError, match=r"process\(self, sub_batch\)") as caught:
        define({"cursor": ("id",)})
    assert "perform(self)" in str(caught.value)


def test_a_class_with_both_process_and_perform_fails(define: Any) -> None:
    with pytest.raises(OperationDefinitionError, match="defines both process"):
        define({"process": process, "perform": perform})


def test_process_added_under_an_inherited_perform_fails_since_it_would_never_run(
    define: Any,
) -> None:
    parent = define({"perform": perform})
    with pytest.raises(OperationDefinitionError, match=r"perform\(\) would run"):
        type("Child", (parent,), {"name": "tests.definition.child", "process": process})


def test_a_subclass_changing_only_attributes_keeps_its_parents_process(define: Any) -> None:
    parent = define({"process": process})
    child = type("Child", (parent,), {"name": "tests.definition.child2", "pause_ms": 5})
    try:
        assert child.process is process and child.perform is bbo.BaseOperation.perform
    finally:
        unregister(child.name)


@pytest.mark.parametrize(
    ("namespace", "shape"),
    [
        ({"process": lambda self: None}, r"process\(self, sub_batch\)"),
        ({"process": lambda self, a, b: None}, r"process\(self, sub_batch\)"),
        ({"perform": lambda self, sub_batch: None}, r"perform\(self\)"),
    ],
    ids=["process-without-sub-batch", "process-with-two", "perform-with-one"],
)
def test_a_hook_that_cannot_take_its_arguments_fails_at_definition(
    define: Any, namespace: dict[str, Any], shape: str
) -> None:
    with pytest.raises(OperationDefinitionError, match=f"cannot be called as {shape}"):
        define(namespace)


def test_the_default_perform_calls_process_once_per_sub_batch_in_order(define: Any) -> None:
    seen: list[Any] = []
    cls = define({"process": lambda self, sub_batch: seen.append(sub_batch)})

    class Engine:  # stands for the batching engine: only the walk's order matters here
        def iterate(self) -> Iterator[str]:
            yield from ("first", "second", "third")

    instance = cls({})
    instance._engine = Engine()
    instance.perform()
    assert seen == ["first", "second", "third"]


def test_an_exception_in_process_leaves_the_walk_at_the_failing_sub_batch(define: Any) -> None:
    reached: list[str] = []

    def failing(self: Any, sub_batch: str) -> None:
        reached.append(sub_batch)
        if sub_batch == "second":
            raise RuntimeError("boom")

    cls = define({"process": failing})

    class Engine:
        def iterate(self) -> Iterator[str]:
            yield from ("first", "second", "third")

    instance = cls({})
    instance._engine = Engine()
    with pytest.raises(RuntimeError, match="boom"):
        instance.perform()
    assert reached == ["first", "second"]  # the rest of the range is not walked
