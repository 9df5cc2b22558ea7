DROP TABLE embedding_jobs;
