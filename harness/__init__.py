"""What tests and benchmarks share to start real servers of their own: a Ray head (``ray_head``) and a
PostgreSQL server (``postgres_server``). Not part of the package."""
