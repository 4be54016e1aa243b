"""The made-up people, places, conditions and medicines the benchmark data draws from (no real person's data)."""
from __future__ import annotations

FIRST = ("Margaret", "James", "Linda", "Robert", "Patricia", "Michael", "Barbara", "William", "Elizabeth", "David",
         "Jennifer", "Richard", "Maria", "Joseph", "Susan", "Thomas", "Dorothy", "Charles", "Lisa", "Daniel",
         "Nancy", "Matthew", "Karen", "Anthony", "Betty", "Mark", "Helen", "Donald", "Sandra", "Steven", "Ana",
         "Paul", "Donna", "Andrew", "Carol", "Joshua", "Ruth", "Kenneth", "Sharon", "Kevin", "Michelle", "Brian",
         "Laura", "George", "Sarah", "Timothy", "Kimberly", "Ronald", "Deborah", "Jason", "Priya", "Wei", "Aisha")
LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
        "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams",
        "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Okafor", "Patel", "Kim")
CITIES = (("Springfield", "IL", "627"), ("Chicago", "IL", "606"), ("St. Louis", "MO", "631"),
          ("Peoria", "IL", "616"), ("Champaign", "IL", "618"), ("Indianapolis", "IN", "462"),
          ("Madison", "WI", "537"), ("Milwaukee", "WI", "532"), ("Des Moines", "IA", "503"),
          ("Columbia", "MO", "652"))
STREETS = ("Oak Lane", "Maple Avenue", "Washington Street", "Lincoln Road", "Elm Street", "Cedar Court",
           "Park Avenue", "Lakeview Drive", "Hickory Way", "Prairie Road")
CONDITIONS = ("multiple sclerosis", "fibromyalgia", "crohn's disease", "chronic fatigue syndrome", "long covid",
              "complex regional pain syndrome", "hashimoto's thyroiditis", "ulcerative colitis")
MEDICATIONS = ("vitamin d3 2000 IU", "gabapentin 300 mg", "baclofen 10 mg", "levothyroxine 50 mcg",
               "sertraline 50 mg", "magnesium glycinate", "ocrelizumab", "metformin 500 mg")
EFFECTS = ("vivid_dreams", "insomnia", "headache", "nausea", "morning_stiffness")
