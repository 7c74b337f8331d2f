-- Results of any JSON type, and progress (issue 15).
--
-- A string result stays in `result` (text), exactly as before, so that the
-- common case (the built-in types answer with strings; F(n) as its digits)
-- writes and reads what it always did. Any other JSON value goes in
-- `result_json`; never both, and never a string there, so each result has one
-- place. jsonb cannot hold NUL (U+0000): the job service refuses such results.
--
-- Progress is three typed columns rather than one jsonb, so that the database
-- itself keeps the fraction within 0..1 and the message short, and a read
-- needs no JSON decoding. They are set together or not at all; a new claim
-- clears them, a finished job keeps them as they were left.
--
-- The columns are new, so every existing row is NULL in them and satisfies
-- the CHECKs: NOT VALID spares a scan of the whole jobs table under an
-- exclusive lock. (New and updated rows are checked all the same.)
ALTER TABLE jobs
    ADD COLUMN result_json jsonb,
    ADD COLUMN progress_fraction double precision,
    ADD COLUMN progress_message text,
    ADD COLUMN progress_at timestamptz,
    ADD CONSTRAINT jobs_result_json_completed CHECK (result_json IS NULL OR status = 'COMPLETED') NOT VALID,
    ADD CONSTRAINT jobs_one_result CHECK (result IS NULL OR result_json IS NULL) NOT VALID,
    ADD CONSTRAINT jobs_result_json_not_string CHECK (jsonb_typeof(result_json) <> 'string') NOT VALID,
    ADD CONSTRAINT jobs_progress_fraction CHECK (progress_fraction BETWEEN 0 AND 1) NOT VALID,
    ADD CONSTRAINT jobs_progress_message CHECK (char_length(progress_message) <= 200) NOT VALID,
    ADD CONSTRAINT jobs_progress_whole CHECK (
        (progress_at IS NULL) = (progress_fraction IS NULL) AND (progress_at IS NULL) = (progress_message IS NULL)
    ) NOT VALID;
