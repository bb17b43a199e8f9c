"""Signal receivers: record the need to sync inside the saving transaction, enqueue on commit."""

from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save

from . import sync, tasks
from .sources import get_sources

SNAPSHOT = "_calendar_sync_snapshot"


def _values(attnames, instance):
    return tuple(instance.__dict__.get(name) for name in attnames)


def _snapshot(attnames, instance, **kwargs):
    instance.__dict__[SNAPSHOT] = _values(attnames, instance)


def _saved(source, attnames, instance, created, raw=False, **kwargs):
    if raw:
        return
    if not created and attnames and instance.__dict__.get(SNAPSHOT) == _values(attnames, instance):
        return  # nothing the event shows has changed
    _snapshot(attnames, instance)
    _changed(source, instance)


def _changed(source, instance, **kwargs):
    destinations = sync.mark_changed(source, instance)
    if destinations:
        transaction.on_commit(partial(tasks.enqueue_all, source.key, instance.pk, destinations))


def connect():
    for source in get_sources().values():
        model = source.get_model()
        attnames = tuple(model._meta.get_field(name).attname for name in source.watched_fields)
        uid = f"calendar_sync:{source.key}"
        post_init.connect(partial(_snapshot, attnames), sender=model, weak=False, dispatch_uid=f"{uid}:init")
        post_save.connect(partial(_saved, source, attnames), sender=model, weak=False, dispatch_uid=f"{uid}:save")
        post_delete.connect(partial(_changed, source), sender=model, weak=False, dispatch_uid=f"{uid}:delete")
