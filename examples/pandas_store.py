"""A store in pandas, one call per question (run after `mmat demo` or `mmat synth`)."""
from mmat.store import read_frame


def solved_by_domain(settings=None):
    return read_frame("select k.domain, count(*) as trajectories, avg((t.verdict = 'correct')::int) as solved "
                      "from trajectories t join tasks k using (task_id) group by 1 order by 1", settings)


if __name__ == "__main__":
    print(read_frame("trajectories").head())
    print(solved_by_domain())
