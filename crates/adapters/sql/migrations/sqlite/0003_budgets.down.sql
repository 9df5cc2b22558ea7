DROP TABLE usage_reservations;
DROP TABLE budgets;
