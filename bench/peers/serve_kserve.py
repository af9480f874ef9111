"""kserve peer of the serving benchmark: the taxi wide&deep model of serving_model.py behind
kserve's Python ModelServer, Open Inference Protocol v2 over HTTP:
    POST /v2/models/taxi/infer   inputs pickup_datetime (BYTES), pickup_location_id (INT64),
                                 dropoff_location_id (INT64), passenger_count (FP64), shape [N]
    -> output "predicted_duration_min" (FP64, [N])

Run with the serving venv's python (bench/run_serving.sh does):
    python serve_kserve.py --model_dir DIR/model --http_port PORT
DIR is what `serving_model.py DIR` built. One uvicorn worker, gRPC off; kserve's own flags
(--workers, ...) are accepted too. predict() is synchronous, so it runs on the event loop, as a
plain custom kserve model does.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kserve
from kserve import InferOutput, InferRequest, InferResponse, model_server
from kserve.utils.utils import generate_uuid

from serving_model import Predictor

INPUTS = ("pickup_datetime", "pickup_location_id", "dropoff_location_id", "passenger_count")


class TaxiModel(kserve.Model):
    def __init__(self, name, model_dir):
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self):
        self.predictor = Predictor(self.model_dir)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        cols = {i.name: i.data for i in payload.inputs}
        missing = [n for n in INPUTS if n not in cols]
        if missing:
            raise kserve.errors.InvalidInput(f"missing inputs: {missing}")
        out = self.predictor.predict(*(cols[n] for n in INPUTS))
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[
            InferOutput(name="predicted_duration_min", shape=[len(out)], datatype="FP64", data=out)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser], conflict_handler="resolve")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model_name", default="taxi")
    args, _ = parser.parse_known_args()
    server = model_server.ModelServer(http_port=args.http_port, workers=args.workers, enable_grpc=False)
    server.start([TaxiModel(args.model_name, args.model_dir)])
