#!/usr/bin/python3
"""Write representative webhook 1.0 payloads, one JSON object per line.

    gen_ndjson.py [--count N] [--seed S] OUTPUT

Every line has the keys of fixtures/v1/representative.json in the same order
(the shape the shipped mapping targets); ids, names, addresses, dates and
answers vary. The output is the same for the same seed and count. Local
times avoid 02:00-02:59, so no line falls in a daylight-saving gap and every
line maps.
"""

import argparse
import datetime
import json
import random
import sys
import uuid

FIRST = ["Olivier", "Marie", "Lucas", "Emma", "Noah", "Louise", "Arthur", "Alice",
         "Jules", "Chloe", "Victor", "Lea", "Hugo", "Manon", "Louis", "Camille"]
LAST = ["Qualifio", "Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems",
        "Claes", "Goossens", "Wouters", "Dubois", "Lambert", "Dupont", "Martin"]
CITIES = [("5000", "Namur"), ("1000", "Bruxelles"), ("4000", "Liege"), ("2000", "Antwerpen"),
          ("9000", "Gent"), ("7000", "Mons"), ("1300", "Wavre"), ("8000", "Brugge")]
TYPES = ["QUIZZ", "PREDICTION", "SWEEPSTAKE", "POLL", "PERSONALITY_TEST", "MEMORY"]
DEVICES = [("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                       "(KHTML, like Gecko) Chrome/86.0.4240.198 Safari/537.36"),
           ("mobile", "Mozilla/5.0 (iPhone; CPU iPhone OS 14_2 like Mac OS X) AppleWebKit/605.1.15 "
                      "(KHTML, like Gecko) Version/14.0.1 Mobile/15E148 Safari/604.1"),
           ("tablet", "Mozilla/5.0 (Linux; Android 10; SM-T510) AppleWebKit/537.36 "
                      "(KHTML, like Gecko) Chrome/86.0.4240.185 Safari/537.36")]
UPLOAD_EXT = ["png", "jpg", "pdf", "gif"]
EPOCH = datetime.datetime(2019, 1, 1)


def local_time(rng, start=None, max_minutes=None):
    """A local time as 'YYYY-MM-DD HH:MM:SS', never between 02:00 and 02:59."""
    while True:
        if start is None:
            t = EPOCH + datetime.timedelta(seconds=rng.randrange(6 * 365 * 86400))
        else:
            t = start + datetime.timedelta(minutes=rng.randrange(1, max_minutes))
        if t.hour != 2:
            return t


def payload(rng, i):
    def u():
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    first, last = rng.choice(FIRST), rng.choice(LAST)
    zipcode, city = rng.choice(CITIES)
    device, agent = rng.choice(DEVICES)
    started = local_time(rng)
    done = local_time(rng, started, 120)
    ch_start = local_time(rng)
    ch_end = local_time(rng, ch_start, 60 * 24 * 30)
    website = rng.randrange(1000, 99999)
    campaign = rng.randrange(100000, 999999)
    score = rng.choice([0, 50, 100])
    upload = "%s.%s" % (u(), rng.choice(UPLOAD_EXT))
    fmt = "%Y-%m-%d %H:%M:%S"
    return {
        "participation_id": u() if i % 2 else u().upper(),
        "ip": "%016X" % rng.getrandbits(64),
        "url": "https://player.qualifio.com/20/v1.cfm?id=%s" % u().upper(),
        "date_start": started.strftime(fmt),
        "date_participation": done.strftime(fmt),
        "status": "complete" if i % 10 else "incomplete",
        "device": device,
        "user_agent": agent,
        "campaign_id": campaign if i % 3 else str(campaign),
        "campaign_title": "Campaign %d" % campaign,
        "campaign_type": rng.choice(TYPES),
        "theme_code": "THEME_%d" % rng.randrange(1, 20),
        "theme_description": "Theme description %d" % rng.randrange(1, 20),
        "channel_uuid": u(),
        "publish_type": rng.choice(["widget", "minisite", "facebook"]),
        "channel_date_start": ch_start.strftime(fmt),
        "channel_date_end": ch_end.strftime(fmt),
        "website_id": str(website) if i % 2 else website,
        "website_name": "Website %d" % website,
        "website_domain": "site-%d.example.com" % website,
        "website_country": rng.choice(["be", "fr", "nl", "lu", "de"]),
        "lastname": last,
        "firstname": first,
        "email": "%s.%s.%d@example.com" % (first.lower(), last.lower(), i),
        "gender": rng.choice(["M", "F"]),
        "birthdate": "%04d-%02d-%02d" % (rng.randrange(1940, 2008), rng.randrange(1, 13),
                                         rng.randrange(1, 29)),
        "phone": "+3281%06d" % rng.randrange(1000000),
        "address": "Rue de l'Exemple %d" % rng.randrange(1, 300),
        "zipcode": zipcode,
        "city": city,
        "country": "BE",
        "upload": "https://files.qualifio.com/upload/qualifio___testing_0/%s/%s" % (u().upper(), upload),
        "optin_my_newsletter": rng.choice(["1", "0", ""]),
        "optin_partners": rng.choice([0, 1]),
        "q1": rng.choice(["Brussels", "Antwerp", "Ghent"]),
        "q1_score": score,
        "q1_correct": score > 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=20201030)
    ap.add_argument("output")
    args = ap.parse_args()
    if args.count < 1:
        ap.error("--count must be positive")
    rng = random.Random(args.seed)
    with open(args.output, "w", encoding="utf-8") as f:
        for i in range(args.count):
            f.write(json.dumps(payload(rng, i), ensure_ascii=False, separators=(",", ":")))
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
