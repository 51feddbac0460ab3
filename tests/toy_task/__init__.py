"""A third task family, used by tests/test_task_contract.py to show what adding a task takes: a module like
this one (task.py + schema.py, which would live in src/tasks/<family>/) and a line in src.tasks.TASKS."""
