/*
 * learn: infer a mapping rule file from paired traffic (the `learn`
 * command).
 *
 * Input is a set of v1 bodies and a set of real v2 bodies of the same
 * participations.  Both sides are read as NDJSON (one body per line),
 * capture lines whose `body` member holds the document (the `record`
 * setting's v1 captures, `dry_run.v2_record`'s v2 captures), or single
 * JSON files and folders of them (fixtures).  A v1 document is paired with
 * the v2 document whose `id` one of its values spells (ignoring ASCII case)
 * and, when an id occurs more than once, whose `state` its state rule
 * yields.
 *
 * From the pairs the learner infers, by value agreement, the rules of the
 * language in mappings/README.md: field moves with their conversion (copy,
 * integer, upper, lower, datetime with its IANA zone and DST policies),
 * value maps, constants, defaults, the mapping-variable table (section,
 * variable, id, label, type, v1 key and prefixes, choices, separators,
 * opt-in value maps, categories, scores, correctness, uploads), the
 * ignore list and the unmapped policy.  Every emitted rule carries its
 * evidence as a comment; the file ends with a report (unexplained v2
 * paths, unused v1 keys, conflicting evidence with example participation
 * ids, values seen once) and with the share of pairs the learned file
 * reproduces exactly under the real engine.
 *
 * A rule is emitted only when it agrees with at least `min_support` pairs
 * and with at least 90 % of the pairs where its inputs occur; the minority
 * is listed as conflicting evidence, so a few edited or damaged pairs do
 * not change what is learned.
 *
 * Thread-safety: one learn run uses no global state besides the tz
 * database files it reads.  Nothing is logged.
 */
#ifndef BRIDGE_LEARN_H
#define BRIDGE_LEARN_H

int cmd_learn(int argc, char **argv); /* bridge/cmd/learn.c */

#endif
