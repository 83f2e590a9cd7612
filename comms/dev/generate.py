"""`comms roster generate`: a synthetic OneRoster 1.1 bundle of realistic size and mix, seeded.

Miami-Dade in 2020 is the model: about 334,000 students in about 390 schools. Assumed mix (no public
per-family figure exists): guardians read Spanish 52%, English 40%, Haitian Creole 8%; households of
one to three children (60/30/10%) with one or two guardians (70/30%); 85% SMS consent, 2% no contact.
Names come from Faker's es_MX, en_US and, for Creole-speaking families, fr_FR (Faker has no ht).

Phone numbers are random valid Miami numbers (305/786), which may belong to real people: every row
is marked `metadata.synthetic=true`, and the pipeline refuses to send to a synthetic roster through
anything but a local provider URL.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from faker import Faker

from comms.progress import NO_PROGRESS, Tracker

GRADES = ("PK", "KG", *(f"{n:02d}" for n in range(1, 13)))
BANDS = {"elementary": GRADES[:7], "middle": GRADES[7:10], "senior": GRADES[10:]}
LANG_WEIGHTS = (("es", 0.52), ("en", 0.40), ("ht", 0.08))
FAKER_LOCALE = {"es": "es_MX", "en": "en_US", "ht": "fr_FR"}
USER_FIELDS = [
    "sourcedId",
    "status",
    "dateLastModified",
    "enabledUser",
    "orgSourcedIds",
    "role",
    "username",
    "userIds",
    "givenName",
    "familyName",
    "middleName",
    "identifier",
    "email",
    "sms",
    "phone",
    "agentSourcedIds",
    "grades",
    "password",
    "metadata.language",
    "metadata.smsConsent",
    "metadata.emailConsent",
    "metadata.noContact",
    "metadata.synthetic",
]


def generate_bundle(
    directory: str | Path, students: int, seed: int = 2020, progress: Tracker = NO_PROGRESS
) -> dict[str, int]:
    out = Path(directory)
    progress.task("students generated", students)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fakers = {lang: Faker(loc) for lang, loc in FAKER_LOCALE.items()}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed + i)
    n_schools = max(4, round(students / 856))  # 334,000 / 390; at least one school of each band
    schools: dict[str, list[str]] = {band: [] for band in BANDS}
    with open(out / "orgs.csv", "w", newline="", encoding="utf-8") as orgs:
        w = csv.writer(orgs)
        w.writerow(["sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId"])
        w.writerow(["district", "", "", "Miami-Dade County Public Schools", "district", "MDCPS", ""])
        for i in range(n_schools):
            band = ("elementary", "elementary", "middle", "senior")[i % 4]
            sid = f"{1000 + i}"
            kind = {"elementary": "Elementary", "middle": "Middle", "senior": "Senior High"}[band]
            w.writerow([sid, "", "", f"{fakers['en'].last_name()} {kind}", "school", sid, "district"])
            schools[band].append(sid)
    used_phones: set[str] = set()
    homerooms: set[tuple[str, str]] = set()  # (school, grade): the class each enrollment names
    counts = {"students": 0, "guardians": 0, "schools": n_schools}
    with (
        open(out / "users.csv", "w", newline="", encoding="utf-8") as uf,
        open(out / "enrollments.csv", "w", newline="", encoding="utf-8") as ef,
    ):
        users = csv.DictWriter(uf, USER_FIELDS)
        users.writeheader()
        enroll = csv.writer(ef)
        enroll.writerow(
            [
                "sourcedId",
                "status",
                "dateLastModified",
                "classSourcedId",
                "schoolSourcedId",
                "userSourcedId",
                "role",
                "primary",
                "beginDate",
                "endDate",
            ]
        )
        h = 0
        while counts["students"] < students:
            h += 1
            lang = rng.choices([lg for lg, _ in LANG_WEIGHTS], [w for _, w in LANG_WEIGHTS])[0]
            fk = fakers[lang]
            family = fk.last_name()
            kids = min(rng.choices((1, 2, 3), (0.6, 0.3, 0.1))[0], students - counts["students"])
            gids = [f"g{h:07d}-{k}" for k in range(rng.choices((1, 2), (0.7, 0.3))[0])]
            sids = [f"s{counts['students'] + k + 1:07d}" for k in range(kids)]
            kid_schools: list[str] = []
            progress.advance("students generated", kids)
            for sid in sids:
                grade = rng.choice(GRADES)
                band = next(b for b, gs in BANDS.items() if grade in gs)
                school = rng.choice(schools[band])
                users.writerow(
                    {
                        "sourcedId": sid,
                        "enabledUser": "true",
                        "orgSourcedIds": school,
                        "role": "student",
                        "username": sid,
                        "givenName": fk.first_name(),
                        "familyName": family,
                        "agentSourcedIds": ",".join(gids),
                        "grades": grade,
                        "metadata.synthetic": "true",
                    }
                )
                homerooms.add((school, grade))
                kid_schools.append(school)
                enroll.writerow(
                    [
                        f"e-{sid}",
                        "",
                        "",
                        f"hr-{school}-{grade}",
                        school,
                        sid,
                        "student",
                        "true",
                        "2020-08-24",
                        "2021-06-09",
                    ]
                )
            for gid in gids:
                while True:
                    phone = f"+1{rng.choice(('305', '786'))}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
                    if phone not in used_phones:
                        used_phones.add(phone)
                        break
                users.writerow(
                    {
                        "sourcedId": gid,
                        "enabledUser": "true",
                        "orgSourcedIds": ",".join(dict.fromkeys(kid_schools)),
                        "role": rng.choice(("parent", "parent", "guardian")),
                        "username": gid,
                        "givenName": fk.first_name(),
                        "familyName": family,
                        "email": f"{gid}@example.org",
                        "sms": phone,
                        "agentSourcedIds": ",".join(sids),
                        "metadata.language": lang,
                        "metadata.smsConsent": "true" if rng.random() < 0.85 else "false",
                        "metadata.noContact": "true" if rng.random() < 0.02 else "false",
                        "metadata.synthetic": "true",
                    }
                )
            counts["students"] += kids
            counts["guardians"] += len(gids)
    _write_classes(out, sorted(homerooms))
    sent = {"academicSessions", "classes", "courses", "enrollments", "orgs", "users"}
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as manifest:
        w = csv.writer(manifest)
        w.writerows(
            [
                ["propertyName", "value"],
                ["manifest.version", "1.0"],
                ["oneroster.version", "1.1"],
                *[[f"file.{name}", "bulk" if name in sent else "absent"] for name in MANIFEST_FILES],
                ["source.systemName", "district-comms synthetic roster"],
            ]
        )
    return counts


#: every file.* property a OneRoster 1.1 manifest lists, sent or not
MANIFEST_FILES = (
    "academicSessions",
    "categories",
    "classes",
    "classResources",
    "courses",
    "courseResources",
    "demographics",
    "enrollments",
    "lineItems",
    "orgs",
    "resources",
    "results",
    "users",
)


def _write_classes(out: Path, homerooms: list[tuple[str, str]]) -> None:
    """The homeroom classes the enrollments name, their courses and the school year they belong to
    (classes.csv needs a course and a term). Bulk files: status and dateLastModified blank."""
    with open(out / "academicSessions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate", "parentSourcedId",
             "schoolYear"]
        )  # fmt: skip
        w.writerow(["sy2021", "", "", "2020-2021", "schoolYear", "2020-08-24", "2021-06-09", "", "2021"])
    with open(out / "courses.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title", "courseCode", "grades",
             "orgSourcedId", "subjects", "subjectCodes"]
        )  # fmt: skip
        for school, grade in homerooms:
            w.writerow([f"hr-course-{school}-{grade}", "", "", "sy2021", f"Homeroom {grade}", f"HR-{grade}", grade,
                        school, "", ""])  # fmt: skip
    with open(out / "classes.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId", "classCode", "classType",
             "location", "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods"]
        )  # fmt: skip
        for school, grade in homerooms:
            w.writerow([f"hr-{school}-{grade}", "", "", f"Homeroom {grade}", grade, f"hr-course-{school}-{grade}",
                        f"HR-{grade}", "homeroom", "", school, "sy2021", "", "", ""])  # fmt: skip
