-- Ground speeds at the moment of crossing, per line row and direction: the
-- crossings with a known speed and their mean, 85th percentile and maximum
-- in km/h. Rows stored before this migration, and rows whose direction had
-- no crossing with a known speed, keep NULL in all four columns.
ALTER TABLE count_lines ADD COLUMN speed_in_n BIGINT;
ALTER TABLE count_lines ADD COLUMN speed_in_mean_kmh DOUBLE PRECISION;
ALTER TABLE count_lines ADD COLUMN speed_in_p85_kmh DOUBLE PRECISION;
ALTER TABLE count_lines ADD COLUMN speed_in_max_kmh DOUBLE PRECISION;
ALTER TABLE count_lines ADD COLUMN speed_out_n BIGINT;
ALTER TABLE count_lines ADD COLUMN speed_out_mean_kmh DOUBLE PRECISION;
ALTER TABLE count_lines ADD COLUMN speed_out_p85_kmh DOUBLE PRECISION;
ALTER TABLE count_lines ADD COLUMN speed_out_max_kmh DOUBLE PRECISION;
