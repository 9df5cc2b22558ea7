DROP TABLE text_entries;
