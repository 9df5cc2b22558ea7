DROP TABLE usage_aggregates;
