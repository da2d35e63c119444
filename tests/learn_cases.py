"""Hidden rule files and v1 traffic generators for `webhook-bridge learn`.

Each case is a rule file written for the test (account-specific key names,
zones, enumerations, opt-in forms, prefixes, scores, uploads) and a function
that makes v1 bodies for it; the "real" v2 is what `map` makes of them under
the hidden rules.  tests/test_learn.py and bench/learn_bench.sh use them."""

import datetime
import json
import random
import uuid
import zoneinfo

CASE_NEW_YORK = r'''
version = 1;
timezone = "America/New_York";
ambiguous = "earlier";
gap = "reject";
unmapped = "form";
ignore = [ "hmac", "sent_by" ];
prefixes = { form = "f_"; optins = "optin_"; questionnaire = "quiz_"; };
fields = (
  { to = "id"; from = "pid"; convert = "upper"; },
  { to = "ip"; from = "remote_addr"; },
  { to = "startedAt"; from = "begun"; convert = "datetime"; },
  { to = "completedAt"; from = "finished"; convert = "datetime"; },
  { to = "state"; from = "outcome"; unknown = "reject";
    map = ( ["done", "COMPLETED"], ["partial", "INCOMPLETE"] ); },
  { to = "browser.device"; from = "dev"; default = "unknown"; },
  { to = "campaign.id"; from = "cid"; convert = "integer"; },
  { to = "campaign.name"; from = "ctitle"; },
  { to = "campaign.type"; value = "quiz"; },
  { to = "campaign.channel.website.id"; from = "site"; convert = "integer"; },
  { to = "campaign.channel.website.country"; from = "site_cc"; convert = "upper"; }
);
variables = (
  { section = "form"; variable = "lastname"; id = 501; label = "Surname"; type = "LASTNAME"; },
  { section = "form"; variable = "email"; from = "contact"; id = 502; label = "E-mail"; type = "EMAIL"; convert = "lower"; },
  { section = "form"; variable = "gender"; id = 503; label = "Gender"; type = "GENDER"; unknown = "reject";
    choices = ( ["m", "Man"], ["w", "Woman"], ["x", "Other"] ); },
  { section = "form"; variable = "hobbies"; id = 504; label = "Hobbies"; type = "CHECKBOX"; separator = "|"; },
  { section = "form"; variable = "photo"; id = 505; label = "Photo"; type = "FILE UPLOAD"; file = true; },
  { section = "form"; variable = "langs"; id = 506; label = "Languages"; type = "CHECKBOX"; },
  { section = "optins"; variable = "news"; id = 601; label = "Newsletter"; description = "Monthly news.";
    map = ( ["yes", "1"], ["no", "0"] );
    categories = ( { id = 9; label = "Marketing"; technical_name = "marketing"; } ); },
  { section = "optins"; variable = "partners"; id = 602; label = "Partners"; },
  { section = "questionnaire"; variable = "q7"; id = 701; label = "Capital?"; type = "ALPHA NUMERIC";
    score_from = "q7_pts"; max_score = 10; response_score_from = "q7_pts"; correct_from = "q7_ok"; }
);
'''

CASE_LORD_HOWE = r'''
version = 1;
timezone = "Australia/Lord_Howe";
ambiguous = "earlier";
gap = "reject";
unmapped = "form";
prefixes = { form = ""; optins = "consent_"; questionnaire = ""; };
fields = (
  { to = "id"; from = "entry_uuid"; convert = "upper"; },
  { to = "url"; from = "page"; },
  { to = "startedAt"; from = "t0"; convert = "datetime"; },
  { to = "state"; from = "st"; unknown = "reject";
    map = ( ["1", "COMPLETED"], ["0", "INCOMPLETE"] ); },
  { to = "browser.userAgent"; from = "ua"; },
  { to = "campaign.id"; value = 4242; },
  { to = "campaign.name"; value = "Spring draw"; },
  { to = "campaign.themes[0].code"; from = "theme"; convert = "lower"; },
  { to = "campaign.channel.publishType"; from = "ptype"; unknown = "reject";
    map = ( ["w", "website"], ["f", "facebook"], ["m", "minisite"] ); }
);
variables = (
  { section = "form"; variable = "firstname"; from = "given"; id = 11; label = "First name"; type = "FIRSTNAME"; },
  { section = "form"; variable = "city"; from = "town"; id = 12; label = "City"; type = "CITY"; convert = "upper"; default = "UNKNOWN"; },
  { section = "form"; variable = "colors"; from = "fav_colors"; id = 13; label = "Colours"; type = "CHECKBOX"; separator = ","; },
  { section = "optins"; variable = "sms"; id = 21; label = "SMS offers"; },
  { section = "questionnaire"; variable = "guess"; from = "guess_answer"; id = 31; label = "How many?"; type = "NUMBER";
    score_from = "guess_score"; max_score_from = "guess_max"; }
);
'''

# One website migrates with its own zone and its own label and id for a
# form field: a stage.
CASE_STAGED = CASE_NEW_YORK + r'''
website_key = "site";
stages = (
  { name = "website 9"; websites = [ 9 ]; timezone = "Europe/Brussels";
    variables = ( { section = "form"; variable = "lastname"; id = 901; label = "Nom"; type = "LASTNAME"; } ); }
);
'''

CASES = {"new_york": CASE_NEW_YORK, "lord_howe": CASE_LORD_HOWE, "staged": CASE_STAGED}


def _local(rng, zone, start_year=2023):
    """A local wall time in zone, some near the clock changes; never in a gap."""
    tz = zoneinfo.ZoneInfo(zone)
    while True:
        if rng.random() < 0.15:
            # Around the clock changes of either hemisphere.
            month, day = rng.choice([(3, rng.randint(8, 14)), (11, rng.randint(1, 7)),
                                     (4, rng.randint(1, 7)), (10, rng.randint(1, 7))])
            base = datetime.datetime(start_year + rng.randint(0, 1), month, day,
                                     rng.randint(0, 4), rng.randint(0, 59), rng.randint(0, 59))
        else:
            base = datetime.datetime(start_year, 1, 1) + datetime.timedelta(
                seconds=rng.randint(0, 2 * 365 * 86400))
        aware = base.replace(tzinfo=tz)
        # Skip times that do not exist (gap = "reject" would refuse them).
        back = aware.astimezone(datetime.timezone.utc).astimezone(tz)
        if back.replace(tzinfo=None) == base:
            return base.strftime("%Y-%m-%d %H:%M:%S")


def v1_new_york(rng, i):
    pid = str(uuid.UUID(int=rng.getrandbits(128)))
    d = {
        "pid": pid,
        "remote_addr": "198.51.100.%d" % rng.randint(1, 254),
        "begun": _local(rng, "America/New_York"),
        "finished": _local(rng, "America/New_York"),
        "outcome": rng.choice(["done", "done", "partial"]),
        "cid": str(rng.randint(1000, 1010)),
        "ctitle": rng.choice(["Summer quiz", "Winter quiz"]),
        "site": rng.randint(7, 9),
        "site_cc": rng.choice(["us", "ca", "mx"]),
        "f_lastname": rng.choice(["Doe", "Smith", "Nguyen", "Garcia", "Kim"]) + str(i),
        "contact": "User%d@Example.COM" % i,
        "f_gender": rng.choice(["m", "w", "x"]),
        "f_hobbies": "|".join(rng.sample(["golf", "chess", "jazz", "yoga"], rng.randint(1, 3))),
        "f_photo": "https://files.example.com/u/%d/pic%d.%s" % (i, i, rng.choice(["jpg", "png"])),
        "f_langs": rng.sample(["en", "fr", "es", "de"], rng.randint(1, 3)),
        "optin_news": rng.choice(["yes", "no"]),
        "optin_partners": rng.choice(["1", "0", ""]),
        "quiz_q7": rng.choice(["Paris", "Lyon"]),
        "q7_pts": rng.choice([0, 5, 10]),
        "q7_ok": rng.choice([True, False]),
        "hmac": "%032x" % rng.getrandbits(128),
        "sent_by": "qualifio",
    }
    if rng.random() < 0.8:
        d["dev"] = rng.choice(["desktop", "mobile", "tablet"])
    if rng.random() < 0.3:
        d["shoe_size"] = str(rng.randint(36, 46))
    return d


def v1_lord_howe(rng, i):
    d = {
        "entry_uuid": str(uuid.UUID(int=rng.getrandbits(128))),
        "page": "https://draw.example.org/p/%d" % rng.randint(1, 50),
        "t0": _local(rng, "Australia/Lord_Howe"),
        "st": rng.choice(["1", "1", "0"]),
        "ua": rng.choice(["Mozilla/5.0 (X11)", "Mozilla/5.0 (iPhone)", "curl/8.0"]),
        "theme": rng.choice(["SPORT", "Music", "news"]),
        "ptype": rng.choice(["w", "f", "m"]),
        "given": rng.choice(["Ann", "Bob", "Cleo", "Dev"]) + str(i % 97),
        "town": rng.choice(["sydney", "Perth", "hobart", None]),
        "fav_colors": ", ".join(rng.sample(["red", "green", "blue"], rng.randint(1, 3))),
        "consent_sms": rng.choice([True, False, None]),
        "guess_answer": str(rng.randint(1, 100)),
        "guess_score": rng.randint(0, 3),
        "guess_max": rng.choice([3, 5]),
        "referrer": rng.choice(["ad", "mail", "web"]),
    }
    return d


GENERATORS = {"new_york": v1_new_york, "lord_howe": v1_lord_howe, "staged": v1_new_york}


def make_v1(case, n, seed):
    rng = random.Random(seed)
    return [GENERATORS[case](rng, i) for i in range(n)]


def write_ndjson(path, docs):
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps(d, separators=(",", ":")) + "\n")
