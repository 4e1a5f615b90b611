"""Regenerates the suite JSONL files and checks them (exact values, unique ids, no train/test overlap).

Run: python3 make_suites.py (from anywhere). corpus/ must already hold the memory fixture docs."""
import json, re, os, io, contextlib, math
from fractions import Fraction as F
D = os.path.dirname(os.path.abspath(__file__))
out = {}

def num(v):
    v = F(v) if not isinstance(v, F) else v
    assert v.denominator == 1 or True
    return int(v) if v.denominator == 1 else float(v)

# ---------- calculator: (prompt, exact expression) ----------
calc_train = [
 ("What is 17 times 23?", "17*23"),
 ("What is 1234 + 5678?", "1234+5678"),
 ("What is 900 minus 358?", "900-358"),
 ("What is twelve times fourteen?", "12*14"),
 ("What is one hundred minus thirty-seven?", "100-37"),
 ("What is 15% of 80?", "F(15,100)*80"),
 ("What is 25 percent of 360?", "F(25,100)*360"),
 ("What is 20% of 250?", "F(20,100)*250"),
 ("What is 3 hours and 20 minutes plus 45 minutes, in minutes?", "3*60+20+45"),
 ("How many seconds are in 2 hours and 15 minutes?", "(2*60+15)*60"),
 ("What is 2 kilometres plus 750 metres, in metres?", "2000+750"),
 ("What is 2 to the power of 10?", "2**10"),
 ("What is 3^5?", "3**5"),
 ("What is 13 squared?", "13**2"),
 ("What is 144 divided by 16?", "F(144,16)"),
 ("Divide 1000 by 8.", "F(1000,8)"),
 ("Add up 4, 8, 15, 16, 23 and 42.", "4+8+15+16+23+42"),
 ("What is the sum of 12, 30 and 58?", "12+30+58"),
 ("Calculate 48 * 52.", "48*52"),
 ("What is (15 + 9) * 3?", "(15+9)*3"),
]
calc_test = [
 ("Multiply nineteen by twenty-seven.", "19*27"),
 ("Could you work out 4,321 plus 1,289?", "4321+1289"),
 ("Take 275 away from 1,000.", "1000-275"),
 ("Eighteen percent of 450 - what's that?", "F(18,100)*450"),
 ("How much is 35 percent of two hundred?", "F(35,100)*200"),
 ("If I add 1 hour 50 minutes and 2 hours 35 minutes, how many minutes is that in total?", "110+155"),
 ("Raise 3 to the 7th power.", "3**7"),
 ("Eleven cubed is what?", "11**3"),
 ("Share 1,260 equally among 15 people. How much does each get?", "F(1260,15)"),
 ("Give me the total of 19, 27, 33, 41 and 50.", "19+27+33+41+50"),
 ("seven thousand divided by thirty-five", "F(7000,35)"),
 ("I walked 1.2 km and then another 850 m. How many metres is that altogether?", "1200+850"),
]
def calc(cases, split):
    rows = []
    for i, (p, e) in enumerate(cases, 1):
        v = eval(e)
        v = F(v)
        assert v.denominator == 1, (p, v)
        rows.append({"id": f"calculator-{split}-{i:02d}", "prompt": p, "expect": {"number": int(v)}, "tool": "calculator.evaluate"})
    return rows
out["calculator.train"] = calc(calc_train, "train")
out["calculator.test"] = calc(calc_test, "test")

# ---------- files: (prompt, filename, text, tool) ----------
W, A = "files.write", "files.append"
files_train = [
 ("Create a file called todo.txt containing 'buy milk'", "todo.txt", "buy milk", W),
 ("Write 'hello world' to a file named hello.txt", "hello.txt", "hello world", W),
 ("Save the text 'meeting at 3pm' in notes.txt", "notes.txt", "meeting at 3pm", W),
 ("Make a file ideas.md with the line 'build a birdhouse'", "ideas.md", "build a birdhouse", W),
 ("Create groceries.txt with the text 'apples, bananas, carrots'", "groceries.txt", "apples, bananas, carrots", W),
 ("Write a file called poem.txt containing 'roses are red'", "poem.txt", "roses are red", W),
 ("Put the words 'project kickoff on monday' into a file named kickoff.md", "kickoff.md", "project kickoff on monday", W),
 ("Create a file named quote.txt that says 'stay curious'", "quote.txt", "stay curious", W),
 ("Make a new file called packing_list.txt with 'passport, charger, socks'", "packing_list.txt", "passport, charger, socks", W),
 ("Create readme-draft.md containing '# my project'", "readme-draft.md", "# my project", W),
 ("Write 'version 0.1.0' into version.txt", "version.txt", "version 0.1.0", W),
 ("Save 'call the dentist' in a file called reminders.txt", "reminders.txt", "call the dentist", W),
 ("Append 'walk the dog' to chores.txt", "chores.txt", "walk the dog", A),
 ("Add the line 'water the plants' to the end of tasks.txt", "tasks.txt", "water the plants", A),
 ("Append 'day 1: ran 5 km' to journal.md", "journal.md", "day 1: ran 5 km", A),
 ("Append the line 'pay rent' to bills.txt", "bills.txt", "pay rent", A),
]
files_test = [
 ("Could you jot down 'pick up dry cleaning' in a file named errands.txt?", "errands.txt", "pick up dry cleaning", W),
 ("I need a file, birthday.md, with the text 'party on saturday'.", "birthday.md", "party on saturday", W),
 ("Store 'the quick brown fox' inside fox.txt please.", "fox.txt", "the quick brown fox", W),
 ("Open a new file called recipe_notes.txt and put 'add more garlic' in it.", "recipe_notes.txt", "add more garlic", W),
 ("Please record 'gate code 4412' in a file called gate.txt", "gate.txt", "gate code 4412", W),
 ("Type up 'thank you for the flowers' and save it as card.txt", "card.txt", "thank you for the flowers", W),
 ("Generate a markdown file named goals.md whose content is 'learn rust'.", "goals.md", "learn rust", W),
 ("Put 'wifi: hearth-guest' in a text file called wifi.txt", "wifi.txt", "wifi: hearth-guest", W),
 ("Tack 'finished chapter three' onto the end of reading-log.md", "reading-log.md", "finished chapter three", A),
 ("Add 'feed the cat' to pets.txt (append it, don't overwrite).", "pets.txt", "feed the cat", A),
]
def files(cases, split):
    return [{"id": f"files-{split}-{i:02d}", "prompt": p, "expect": {"file": f, "contains": t}, "tool": tool}
            for i, (p, f, t, tool) in enumerate(cases, 1)]
out["files.train"] = files(files_train, "train")
out["files.test"] = files(files_test, "test")

# ---------- python: (prompt, code actually run, kind) ----------
def run(code):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {})
    return buf.getvalue().strip()
py_train = [
 ("Run this Python: print(sum(range(10)))", "print(sum(range(10)))", "number"),
 ("Use Python to compute the 10th Fibonacci number and print it", "a,b=0,1\nfor _ in range(10): a,b=b,a+b\nprint(a)", "number"),
 ("Execute: print('hello'[::-1])", "print('hello'[::-1])", "contains"),
 ("Run print(2**16) in Python", "print(2**16)", "number"),
 ("Run this code: print(len('local-first agent framework'))", "print(len('local-first agent framework'))", "number"),
 ("Run: print('-'.join(['a', 'b', 'c']))", "print('-'.join(['a', 'b', 'c']))", "contains"),
 ("Use Python to print the factorial of 6", "import math; print(math.factorial(6))", "number"),
 ("Run: print(sorted([5, 2, 9, 1]))", "print(sorted([5, 2, 9, 1]))", "contains"),
 ("Execute print(sum([3, 17, 8, 13]))", "print(sum([3, 17, 8, 13]))", "number"),
 ("Run: print(sum(x*x for x in range(1, 8)))", "print(sum(x*x for x in range(1, 8)))", "number"),
 ("Run this: print(' '.join(reversed('one two three'.split())))", "print(' '.join(reversed('one two three'.split())))", "contains"),
 ("Python: print(round(22/7, 3))", "print(round(22/7, 3))", "number"),
 ("Run print(list(range(0, 20, 5)))", "print(list(range(0, 20, 5)))", "contains"),
 ("Use Python to print 'hi' three times in a row with no spaces", "print('hi'*3)", "contains"),
 ("Please run: print(int('11111111', 2))", "print(int('11111111', 2))", "number"),
 ("Use Python to print how many days are in 7 weeks", "print(7*7)", "number"),
]
py_test = [
 ("Can you execute print(sum(range(1, 101))) for me?", "print(sum(range(1, 101)))", "number"),
 ("Write and run a tiny Python script that prints the 12th Fibonacci number.", "a,b=0,1\nfor _ in range(12): a,b=b,a+b\nprint(a)", "number"),
 ("In Python, reverse the string 'stressed' and show me the result.", "print('stressed'[::-1])", "contains"),
 ("Please run the following Python and tell me what it outputs: print(3 ** 4 + 1)", "print(3 ** 4 + 1)", "number"),
 ("Fire up Python and print the length of the word 'supercalifragilistic'.", "print(len('supercalifragilistic'))", "number"),
 ("What does this print? Run it to check: print('x'.join('abc'))", "print('x'.join('abc'))", "contains"),
 ("Using python, print the product of the numbers 1 through 7.", "import math; print(math.prod(range(1, 8)))", "number"),
 ("Run this snippet: print(sorted('banana'))", "print(sorted('banana'))", "contains"),
 ("Execute the code print(100 - 7 * 8) and report the output.", "print(100 - 7 * 8)", "number"),
 ("could you use python to print how many seconds are in a day", "print(24*60*60)", "number"),
]
def py(cases, split):
    rows = []
    for i, (p, code, kind) in enumerate(cases, 1):
        r = run(code)
        if kind == "number":
            v = float(r); v = int(v) if v == int(v) else v
            e = {"number": v}
        else:
            e = {"contains": r}
        rows.append({"id": f"python-{split}-{i:02d}", "prompt": p, "expect": e, "tool": "code.run_python"})
    return rows
out["python.train"] = py(py_train, "train")
out["python.test"] = py(py_test, "test")

# ---------- plain ----------
def c(s): return {"contains": s}
def r(s): return {"regex": s}
def n(v): return {"number": v}
plain_train = [
 ("What is the capital of France?", c("Paris")),
 ("Say hello.", r(r"(?i)\b(hello|hi|hey)\b")),
 ("What color is the sky on a clear day?", c("blue")),
 ("What is the opposite of hot?", c("cold")),
 ("How many days are in a week?", n(7)),
 ("What is the capital of Japan?", c("Tokyo")),
 ("What do bees make?", c("honey")),
 ("What animal says moo?", c("cow")),
 ("What is frozen water called?", r(r"(?i)\bice\b")),
 ("What is the largest planet in our solar system?", c("Jupiter")),
 ("How many wings does a bird have?", n(2)),
 ("What color are ripe bananas?", c("yellow")),
 ("What is the opposite of up?", c("down")),
 ("Which ocean is the largest?", c("Pacific")),
 ("Who wrote Romeo and Juliet?", c("Shakespeare")),
 ("Say goodbye.", r(r"(?i)\b(goodbye|bye)\b")),
]
plain_test = [
 ("Name the capital city of Italy.", c("Rome")),
 ("Tell me which planet is known as the Red Planet.", c("Mars")),
 ("Greet me in a friendly way.", r(r"(?i)\b(hello|hi|hey|greetings|good (morning|afternoon|evening))\b")),
 ("What's the opposite of wet?", c("dry")),
 ("Could you tell me how many letters the English alphabet has?", n(26)),
 ("grass is usually what colour?", c("green")),
 ("Which animal barks?", c("dog")),
 ("In which country are the pyramids of Giza?", c("Egypt")),
 ("The sun rises in which direction?", r(r"(?i)\beast")),
 ("What is H2O more commonly called?", c("water")),
]
def plain(cases, split):
    return [{"id": f"plain-{split}-{i:02d}", "prompt": p, "expect": e} for i, (p, e) in enumerate(cases, 1)]
out["plain.train"] = plain(plain_train, "train")
out["plain.test"] = plain(plain_test, "test")

# ---------- delegation ----------
def fe(f, t): return {"file": f, "contains": t}
deleg_train = [
 ("Have an operative work out 37 times 43.", n(37*43)),
 ("Delegate this: what is 18% of 550?", n(int(F(18,100)*550))),
 ("Ask a helper agent to create a file called delegated-note.txt containing 'sent by the orchestrator'.", fe("delegated-note.txt", "sent by the orchestrator")),
 ("Hand this off to a worker: run print(sum(range(20))) in Python.", n(sum(range(20)))),
 ("Get an operative to add up 125, 250, 375 and 500.", n(125+250+375+500)),
 ("Pass this task to an operative: how many minutes are 4 hours and 15 minutes plus 50 minutes?", n(4*60+15+50)),
 ("Delegate: use Python to print 8 factorial.", n(math.factorial(8))),
 ("Send this to an operative: write 'status: green' to a file named status.txt.", fe("status.txt", "status: green")),
 ("Have a worker compute 2 to the 12th power.", n(2**12)),
 ("Delegate computing 3600 divided by 48.", n(int(F(3600,48)))),
 ("Ask an operative to append 'deploy done' to deploy-log.txt.", fe("deploy-log.txt", "deploy done")),
 ("Let a helper agent run Python to reverse the string 'drawer'.", c("drawer"[::-1])),
]
deleg_test = [
 ("Could you get one of your operatives to multiply 56 by 29?", n(56*29)),
 ("Farm this out to a helper: what's forty percent of 1,150?", n(int(F(40,100)*1150))),
 ("I'd like a subagent to make a file named handoff.md that reads 'ready for review'.", fe("handoff.md", "ready for review")),
 ("Pass along to a worker agent: execute print(2 ** 20) in Python and report the result.", n(2**20)),
 ("Using delegation, total up 88, 112, 64 and 36.", n(88+112+64+36)),
 ("Send a sub-task to an operative: how many seconds are in 3 hours and 5 minutes?", n((3*60+5)*60)),
 ("Get a helper agent to save 'backup finished' into a file called backup.txt.", fe("backup.txt", "backup finished")),
 ("Delegate to an operative: use Python to print the string 'stop' reversed.", c("stop"[::-1])),
]
def deleg(cases, split):
    return [{"id": f"delegation-{split}-{i:02d}", "prompt": p, "expect": e, "tool": "hearth.delegate"} for i, (p, e) in enumerate(cases, 1)]
out["delegation.train"] = deleg(deleg_train, "train")
out["delegation.test"] = deleg(deleg_test, "test")

# ---------- retrieval: (prompt, expect, doc, verbatim snippet) ----------
ret_train = [
 ("Search my notes: what year did the Berlin Wall fall?", n(1989), "05-berlin-wall.md", "9 November 1989"),
 ("Search my notes: in what year did Huygens publish his explanation of Saturn's ring?", n(1659), "02-saturn-rings.md", "published his explanation in 1659"),
 ("Search my notes: how tall is the Hallgrimskirkja church in Reykjavik, in meters?", n(74.5), "08-reykjavik.md", "74.5 meters"),
 ("Search my notes: what is Hearth's daily meal allowance when travelling, in euros?", n(55), "15-hearth-expense-policy.md", "55 euros per day"),
 ("Search my notes: at what time UTC does the on-call handover happen on Tuesdays?", c("09:00"), "16-hearth-on-call-rotation.md", "09:00 UTC"),
 ("Search my notes: around what year was the theremin invented?", n(1920), "09-theremin.md", "around 1920"),
 ("Search my notes: how many basalt columns make up the Giant's Causeway?", n(40000), "10-giants-causeway.md", "40,000 interlocking basalt columns"),
 ("Search my notes: what is the minimum supported Rust version for Lumen 2.4?", n(1.78), "17-lumen-2-4-release-notes.md", "Rust version is now 1.78"),
 ("Search my notes: who founded Vanguard?", c("Bogle"), "30-index-funds.md", "John Bogle founded Vanguard"),
 ("Search my notes: how many buckets does Java's HashMap start with?", n(16), "35-hash-tables.md", "starts with 16 buckets"),
]
ret_test = [
 ("According to my documents, in which year did the Panama Canal open to traffic?", n(1914), "43-panama-canal.md", "15 August 1914"),
 ("I saved some notes on smallpox. Who was the last naturally acquired case?", c("Maalin"), "40-smallpox-eradication.md", "Ali Maow Maalin"),
 ("Find it in my files: how many litres of sap does it take to make one litre of maple syrup?", n(40), "41-maple-syrup.md", "roughly 40 litres of sap"),
 ("My notes mention the Lisbon office. What time does it close on weekdays?", c("20:00"), "18-hearth-lisbon-office.md", "closes at 20:00"),
 ("Dig through my notes and tell me for how many days a male emperor penguin incubates the egg.", n(65), "34-emperor-penguin.md", "about 65 days"),
 ("How many euros does a Hearth engineer get for each week on call? Check my notes.", n(350), "16-hearth-on-call-rotation.md", "350 euros"),
 ("From my notes: in what year did Spyridon Louis win the Olympic marathon in Athens?", n(1896), "36-marathon-distance.md", "in Athens in 1896"),
 ("Which German chemist discovered the thermite process, according to my notes?", c("Goldschmidt"), "11-thermite-reaction.md", "Hans Goldschmidt discovered"),
]
corpus = {f: open(os.path.join(D, "corpus", f)).read() for f in os.listdir(os.path.join(D, "corpus"))}
def ret(cases, split):
    rows = []
    for i, (p, e, doc, snip) in enumerate(cases, 1):
        text = " ".join(corpus[doc].split())
        assert snip in text, (doc, snip)
        ans = e.get("contains") or (f"{e['number']:,}" if isinstance(e["number"], int) and e["number"] >= 10000 else str(e["number"]))
        assert ans in snip, (ans, snip)
        # answer string must not appear in any other document (keeps cases unambiguous)
        others = [f for f, t in corpus.items() if f != doc and re.search(r"(?<![\d.,])" + re.escape(ans) + r"(?![\d]|[.,]\d)", t)]
        if others: print("note: answer", ans, "also in", others)
        rows.append({"id": f"retrieval-{split}-{i:02d}", "prompt": p, "expect": e, "tool": "retrieval.search", "memory": "corpus"})
    return rows
out["retrieval.train"] = ret(ret_train, "train")
out["retrieval.test"] = ret(ret_test, "test")

# ---------- newcomer ----------
newcomer = [
 ("what's twenty-four times fifteen", n(24*15), "calculator.evaluate"),
 ("how much is 12.5% of 640", n(int(F(125,1000)*640)), "calculator.evaluate"),
 ("calculate 7,200 divided by 45", n(int(F(7200,45))), "calculator.evaluate"),
 ("I worked 2 hours 40 minutes this morning and 3 hours 35 minutes after lunch. How many minutes is that in total?", n(160+215), "calculator.evaluate"),
 ("run this python code: print([n for n in range(1, 30) if n % 7 == 0])", c(run("print([n for n in range(1, 30) if n % 7 == 0])")), "code.run_python"),
 ("can you run print(len('hello world') * 3) in python", n(int(run("print(len('hello world') * 3)"))), "code.run_python"),
 ("make a file named shopping.txt that says 'eggs, bread, butter'", fe("shopping.txt", "eggs, bread, butter"), "files.write"),
 ("save the sentence 'meeting moved to friday' into a file called meeting-note.md", fe("meeting-note.md", "meeting moved to friday"), "files.write"),
 ("what is the capital of germany?", c("Berlin"), None),
 ("how many hours are in a day?", n(24), None),
]
rows = []
for i, (p, e, t) in enumerate(newcomer, 1):
    row = {"id": f"newcomer-test-{i:02d}", "prompt": p, "expect": e}
    if t: row["tool"] = t
    rows.append(row)
out["newcomer.test"] = rows

# ---------- checks ----------
ids = set(); train_prompts = []; train_nums = set(); train_files = set(); train_strs = set()
def nums_in(s): return {float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", s)}
for name, rows in out.items():
    for row in rows:
        assert row["id"] not in ids, row["id"]; ids.add(row["id"])
        e = row["expect"]; assert (set(e) == {"file", "contains"}) or len(e) == 1 and set(e) <= {"number","contains","regex"}, row
        if "number" in e and float(e["number"]) in nums_in(row["prompt"]):
            print("WARN expected number appears in prompt:", row["id"], row["prompt"])
        if "contains" in e and "file" not in e and e["contains"].lower() in row["prompt"].lower():
            print("WARN expected text appears in prompt:", row["id"])
        if name.endswith(".train"):
            train_prompts.append(row["prompt"].lower())
            if "number" in e: train_nums.add(float(e["number"]))
            if "file" in e: train_files.add(e["file"])
            if "contains" in e and "file" not in e: train_strs.add(e["contains"].lower())
allfiles = []
for name, rows in out.items():
    for row in rows:
        e = row["expect"]
        if "file" in e: allfiles.append(e["file"]); assert re.fullmatch(r"[A-Za-z0-9_.-]+\.(txt|md)", e["file"])
        if name.endswith(".test"):
            assert row["prompt"].lower() not in train_prompts
            if "number" in e and float(e["number"]) in train_nums: print("WARN test value also a train value:", row["id"], e)
            if "file" in e: assert e["file"] not in train_files
            if "contains" in e and "file" not in e and e["contains"].lower() in train_strs: print("WARN test string in train:", row["id"])
assert len(allfiles) == len(set(allfiles)), "filename reused"
for name, rows in out.items():
    with open(os.path.join(D, name + ".jsonl"), "w") as fh:
        for row in rows: fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(name, len(rows))
