-- The commit ceiling: single-row INSERT transactions.
INSERT INTO ceiling (payload) VALUES ('{"amount": 1}');
