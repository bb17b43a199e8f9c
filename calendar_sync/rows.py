"""The sync's statements, compiled once instead of by the ORM on every sync.

Each sync reads the same rows and writes the same columns. Compiled through the ORM every time,
those statements cost more CPU than the provider call itself (docs/performance.md). Here each
statement's SQL is built once per connection and shape; values go through the fields' own
conversions (`get_db_prep_save`, the `from_db` converters). On PostgreSQL (psycopg 3 with
client-side binding, Django's default) the statements of one step share one round trip.
"""
from contextlib import nullcontext

from django.db import connection, connections, transaction
from django.db.models.query import ModelIterable, get_related_populators


def compiled(key, build):
    """`build()` once per connection (each thread has its own) and `key`."""
    cache = connections[connection.alias].__dict__.setdefault("calendar_sync_compiled", {})  # not the shared proxy's
    if key not in cache:
        cache[key] = build()
    return cache[key]


def batches():
    """Whether one execute() can carry several statements: psycopg 3 binding on the client."""
    if connection.vendor != "postgresql" or connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        return False
    try:
        import psycopg  # noqa: F401 - Django prefers it to psycopg2, whose cursors have no nextset()
    except ImportError:
        return False
    return True


def run(statements, atomic=False, after=()):
    """Execute (sql, params) statements, then the `after` ones; one result each: its rows, or its row count.

    `atomic` makes `statements` one transaction, committed before `after` runs. On PostgreSQL all
    of them travel in one execute(); the server runs its statements in order.
    """
    if len(statements) + len(after) > 1 and batches():
        return _batch(statements, atomic and not connection.in_atomic_block, after)
    results = []
    with connection.cursor() as cursor:
        with transaction.atomic() if atomic and len(statements) > 1 else nullcontext():
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall() if cursor.description is not None else cursor.rowcount)
        for sql, params in after:
            cursor.execute(sql, params)
            results.append(cursor.fetchall() if cursor.description is not None else cursor.rowcount)
    return results


def _batch(statements, transaction_block, after):
    """One execute() for all. Several statements in one query run as one implicit transaction, so
    a transaction that must commit before `after` (an unlock) is spelled out with BEGIN/COMMIT —
    only outside an atomic block, whose transaction is Django's to commit."""
    from psycopg.pq import TransactionStatus

    sqls = [sql for sql, _ in statements]
    if transaction_block:
        sqls = ["BEGIN", *sqls, "COMMIT"]
    sqls += [sql for sql, _ in after]
    params = [p for _, ps in (*statements, *after) for p in ps]
    results = []
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # psycopg's own: nextset() and rownumber without the wrapper's indirection
        try:
            wrapper.execute("; ".join(sqls), params)
        except Exception:
            if transaction_block and connection.connection.info.transaction_status != TransactionStatus.IDLE:
                connection.connection.execute("ROLLBACK")  # end the failed BEGIN: Django believes it is in autocommit
            raise
        while True:
            results.append(cursor.fetchall() if cursor.rownumber is not None else cursor.rowcount)
            if not cursor.nextset():
                break
    if transaction_block:
        results = results[1 : len(statements) + 1] + results[len(statements) + 2 :]
    return results


def _field(model, name):
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


def _where(model, where):
    qn = connection.ops.quote_name
    return " AND ".join(f"{qn(_field(model, name).column)} = %s" for name in where)


def _where_params(model, where):
    return [_field(model, name).get_db_prep_value(value, connection) for name, value in where.items()]


def update(model, values, **where):
    """(sql, params): UPDATE model's table SET `values` WHERE each field in `where` equals its value."""

    def build():
        qn = connection.ops.quote_name
        assignments = ", ".join(f"{qn(_field(model, name).column)} = %s" for name in values)
        return f"UPDATE {qn(model._meta.db_table)} SET {assignments} WHERE {_where(model, where)}"

    sql = compiled(("update", model, tuple(values), tuple(where)), build)
    return sql, [_field(model, name).get_db_prep_save(value, connection) for name, value in values.items()] + _where_params(model, where)


def delete(model, **where):
    """(sql, params): DELETE from model's table WHERE each field in `where` equals its value."""
    sql = compiled(("delete", model, tuple(where)), lambda: f"DELETE FROM {connection.ops.quote_name(model._meta.db_table)} WHERE {_where(model, where)}")
    return sql, _where_params(model, where)


def insert(obj):
    """(sql, params): INSERT of a new instance's row, its auto primary key left to the database; nothing read back."""
    opts = type(obj)._meta
    fields = [f for f in opts.concrete_fields if f is not opts.auto_field]

    def build():
        qn = connection.ops.quote_name
        return f"INSERT INTO {qn(opts.db_table)} ({', '.join(qn(f.column) for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))})"

    sql = compiled(("insert", type(obj)), build)
    return sql, [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


class Loader:
    """Rows of one model's concrete columns into instances, through the converters the ORM would
    apply (decryption of secrets, JSON, datetimes on SQLite): for joins the models don't declare."""

    def __init__(self, model):
        self.model, self.table = model, model._meta.db_table
        self.fields = model._meta.concrete_fields
        self.names = [f.attname for f in self.fields]
        self.steps = []
        for i, f in enumerate(self.fields):
            col = f.get_col(self.table)
            converters = connection.ops.get_db_converters(col) + f.get_db_converters(connection)
            if converters:
                self.steps.append((i, col, converters))

    def columns(self, prefix):
        qn = connection.ops.quote_name
        return ", ".join(f"{prefix}.{qn(f.column)}" for f in self.fields)

    def load(self, values):
        values = list(values)
        for i, col, converters in self.steps:
            for converter in converters:
                values[i] = converter(values[i], col, connection)
        return self.model.from_db(connection.alias, self.names, values)


class ByPk:
    """`queryset.filter(pk=…)` compiled once: its SQL, and its rows into an instance with its
    select_related() objects, as the ORM's ModelIterable builds them."""

    def __init__(self, queryset, pk):
        compiler = queryset.filter(pk=pk).query.get_compiler(connection.alias)
        self.sql, params = compiler.as_sql()
        self.pk_field = queryset.model._meta.pk
        self.valid = list(params) == self.params(pk)[1]  # the primary key is its only value
        klass_info, select = compiler.klass_info, compiler.select
        self.model = klass_info["model"]
        self.start, self.end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        self.init_list = [s[0].target.attname for s in select[self.start : self.end]]
        self.populators = get_related_populators(klass_info, select, connection.alias)
        self.compiler = compiler
        self.converters = compiler.get_converters([s[0] for s in select[: compiler.col_count]])

    def params(self, pk):
        return self.sql, [self.pk_field.get_db_prep_value(self.pk_field.get_prep_value(pk), connection, prepared=True)]

    def load(self, rows):
        """The instance of the first row, or None."""
        for row in self.compiler.apply_converters(rows, self.converters) if self.converters else rows:
            obj = self.model.from_db(connection.alias, self.init_list, row[self.start : self.end])
            for populator in self.populators:
                populator.populate(row, obj)
            return obj
        return None


def _shape(queryset):
    """What makes two querysets compile alike apart from the filter added here; None when they hold
    values of their own (filters, annotations), prefetch, or build anything but plain instances."""
    q = queryset.query
    if (
        q.where or q.annotations or q.extra or q.extra_tables or q.combinator or q.distinct or q.select_for_update or q.low_mark
        or q.high_mark is not None or q.values_select or queryset._prefetch_related_lookups or queryset._known_related_objects
        or queryset._iterable_class is not ModelIterable or queryset.db != connection.alias
        or not all(isinstance(o, str) for o in (*q.order_by, *q.extra_order_by))
    ):
        return None
    return (queryset.model, repr(q.select_related), q.deferred_loading[1], tuple(sorted(q.deferred_loading[0])),
            q.order_by, q.extra_order_by, q.default_ordering, q.standard_ordering)


def by_pk(queryset, pk):
    """A compiled `ByPk` read for this queryset's shape, or None: the caller then reads through the ORM."""
    shape = _shape(queryset)
    if shape is None:
        return None
    read = compiled(("by_pk", shape), lambda: ByPk(queryset, pk))
    return read if read.valid else None
