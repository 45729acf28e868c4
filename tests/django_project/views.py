"""One sync view (Django runs it in a thread) and one async view (on the loop)."""

import asyncio
import json
import threading

from django.http import JsonResponse


def sync_view(request, name):
    return JsonResponse({
        "view": "sync", "name": name, "method": request.method, "query": request.GET.get("q"),
        "main_thread": threading.current_thread() is threading.main_thread(),
    })


async def async_view(request):
    await asyncio.sleep(0)
    body = json.loads(request.body) if request.body else None
    return JsonResponse({
        "view": "async", "method": request.method, "body": body, "scheme": request.scheme,
        "remote_addr": request.META.get("REMOTE_ADDR"), "path": request.path,
        "main_thread": threading.current_thread() is threading.main_thread(),
    })
