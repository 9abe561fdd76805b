"""A typed Python client for the mnist-cvae service (sync and async, on httpx), returning numpy arrays.

from client import Client
with Client("http://127.0.0.1:8000") as cvae:
    samples = cvae.sample(n=4, y=7, seed=1)          # samples.mean: [4, 28, 28]
    scores = cvae.log_likelihood(samples.mean)      # scores.log_px: [4] nats
    classes = cvae.classify(samples.mean)           # classes.probs: [4, 10]
"""

from client.answers import Classes, Columns, LogLikelihoods, Posteriors, Samples
from client.api import ApiError, AsyncClient, Client, ClientError, ServerError

__all__ = [
    "ApiError",
    "AsyncClient",
    "Classes",
    "Client",
    "Columns",
    "ClientError",
    "LogLikelihoods",
    "Posteriors",
    "Samples",
    "ServerError",
]
