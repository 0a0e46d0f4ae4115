"""The SQL of a ``runs()``/``count_runs()`` filter, for the SQL stores alike
(each with its own parameter mark)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from .rules import check_key, check_statuses, check_time

__all__ = ["run_filter", "select_sql"]


def run_filter(task_id: Optional[str], before: Any, since: Any,
               statuses: Optional[Iterable[int]], mark: str = "?"
               ) -> Optional[Tuple[Tuple[str, ...], List[Any]]]:
    """The WHERE terms and parameters of a runs() filter, checked; None when
    nothing can match (no statuses). *mark* is the driver's parameter mark."""
    terms: List[str] = []
    params: List[Any] = []
    if task_id is not None:
        terms.append(f"task_id = {mark}")
        params.append(check_key(task_id))
    for term, value in ((f"scheduled < {mark}", check_time("before", before)),
                        (f"scheduled >= {mark}", check_time("since", since))):
        if value is not None:
            terms.append(term)
            params.append(value)
    codes = check_statuses(statuses)
    if codes is not None:
        if not codes:
            return None
        terms.append(f"status IN ({', '.join([mark] * len(codes))})")
        params.extend(codes)
    return tuple(terms), params


_SELECT_SQL: Dict[Tuple[str, Tuple[str, ...]], str] = {}


def select_sql(select: str, where: Tuple[str, ...], tail: str) -> str:
    """*select* with these WHERE terms (the same string for the same filter,
    so the driver's statement cache prepares it once)."""
    key = (select + tail, where)
    sql = _SELECT_SQL.get(key)
    if sql is None:
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = _SELECT_SQL.setdefault(key, select + clause + tail)
    return sql
