DROP TABLE usage_records;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE personas;
