"""The reference for the Serve benchmark: an ingress that does nothing but answer, on the same cluster."""

from fastapi import FastAPI, Request
from ray import serve

app = FastAPI()


@serve.deployment(name="Empty", ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=200)
@serve.ingress(app)
class Empty:
    @app.post("/recommend")
    async def recommend(self, request: Request) -> dict:
        await request.body()
        return {"items": []}


def build(args: dict):
    return Empty.bind()
