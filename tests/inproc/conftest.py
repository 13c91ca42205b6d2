"""Tests that run Locust inside the pytest process.

Locust monkey-patches the process with gevent when it is imported; patching after ssl/urllib3
were imported (boto3, moto and requests are imported by other test modules) ends in a
RecursionError. So these tests run in a pytest process of their own, patched first:
``pytest --inproc`` (``make test`` runs both sessions).
"""

from gevent import monkey

monkey.patch_all()
