"""Throwaway services for tests: PostgreSQL 15 (postgres.py) and a
single-node Ceph with an S3 endpoint (ceph_rgw.py); see README.md."""
