"""Rebuild sample-data/ from the demo data in ../shared/data (see sample-data/README.md).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install pyarrow==22.0.0
    /tmp/v/bin/python sample-data/make_sample_data.py ../shared/data

Values are copied as they are; only types are set and columns chosen. The output is deterministic
for the same input and pyarrow version.
"""

import glob
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pyarrow.parquet as pq

src = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
out = os.path.dirname(os.path.abspath(__file__))

TAXI_COLUMNS = {
    "pickup_datetime": pa.timestamp("us"),
    "dropoff_datetime": pa.timestamp("us"),
    "passenger_count": pa.int32(),
    "trip_distance": pa.float64(),
    "rate_code_id": pa.int32(),
    "pickup_location_id": pa.int32(),
    "dropoff_location_id": pa.int32(),
    "payment_type": pa.int32(),
    "fare_amount": pa.float64(),
    "tip_amount": pa.float64(),
    "total_amount": pa.float64(),
}

files = sorted(glob.glob(os.path.join(src, "taxi/nyc_yellow_tripdata_samples/yellow_tripdata_sample_*.csv")))
assert len(files) == 30, f"expected 30 monthly files, found {len(files)}"
tables = []
for f in files:
    t = csv.read_csv(
        f,
        convert_options=csv.ConvertOptions(column_types=TAXI_COLUMNS, include_columns=list(TAXI_COLUMNS)),
    )
    tables.append(t)
trips = pa.concat_tables(tables).sort_by([("pickup_datetime", "ascending"), ("dropoff_datetime", "ascending")])
pq.write_table(trips, os.path.join(out, "taxi/nyc_yellow_trips.parquet"), compression="zstd", compression_level=9)
print("taxi", trips.num_rows, "rows")

crypto = csv.read_csv(
    os.path.join(src, "crypto/crypto_database_daily_ohlcv.csv"),
    convert_options=csv.ConvertOptions(
        column_types={"date": pa.date32(), "open": pa.float64(), "high": pa.float64(), "low": pa.float64(),
                      "close": pa.float64(), "volume": pa.float64()}
    ),
)
crypto = crypto.sort_by([("symbol", "ascending"), ("exchange", "ascending"), ("date", "ascending")])
pq.write_table(crypto, os.path.join(out, "crypto/daily_ohlcv.parquet"), compression="zstd", compression_level=9)
print("crypto", crypto.num_rows, "rows")
