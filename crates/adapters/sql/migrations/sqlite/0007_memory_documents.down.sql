DROP TABLE embeddings;
DROP TABLE document_chunks;
DROP TABLE documents;
DROP TABLE memories;
