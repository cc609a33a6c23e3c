"""Flag parity with the study's scripts (tests/data/study_flags.json): every flag of each script exists on our command,
under its name or an alias, as a switch where it was a switch, with the study's default, type and choices — or the
difference is a row of the command's deviation table, and every row is named in the command's --help."""
import argparse, inspect, json
from pathlib import Path
import pytest
from segthor_nb import cli
from segthor_nb.core import deviations, parser_of

STUDY = json.loads((Path(__file__).resolve().parent/'data'/'study_flags.json').read_text())
DATASETS_PARAMS = ['TOY2', 'SEGTHOR', 'SEGTHOR_MANUAL_SPLIT']  # the study's `datasets_params.keys()`


def rows(*commands:str)->list:
    "The settings of the rows of `commands` in the deviation table"
    return [d['setting'] for d in deviations(*commands)]


# study script -> (our command, its flag aliases {name: spellings}, the settings of its deviation rows)
COMMANDS = {
    'main.py': (cli.segthor_train, {}, rows('train', 'model')),
    'test.py': (cli.segthor_test, cli.EVAL_ALIASES, rows('test', 'model')),
    'test3d.py': (cli.segthor_test3d, cli.EVAL_ALIASES, rows('test3d', 'model')),
    'test3dnnunet.py': (cli.segthor_test3dnnunet, cli.NNUNET_ALIASES, rows('test3dnnunet')),
}


def our_action(parser:argparse.ArgumentParser, flag:str, aliases:dict):
    "Our argparse action for a study flag: by its name, or through an alias"
    canonical = {a: f'--{name}' for name, spellings in aliases.items() for a in spellings}
    acts = parser._option_string_actions
    return acts.get(flag) or acts.get(canonical.get(flag, ''))


def differences(spec:dict, act)->list:
    "How our flag differs from the study's `spec` (default, switch, type, choices); [] if it does not"
    out, switch = [], spec.get('action') == 'store_true'
    if switch and not isinstance(act, argparse._StoreTrueAction): out.append('not a switch')
    if act.default != spec.get('default', False if switch else None): out.append(f'default {act.default!r} != {spec.get("default")!r}')
    if spec.get('type') in ('int', 'float') and act.type is not {'int': int, 'float': float}[spec['type']]: out.append(f'type {act.type}')
    if 'choices' in spec:
        study = DATASETS_PARAMS if spec['choices'] == 'datasets_params.keys()' else spec['choices']
        if not set(study) <= set(act.choices or ()): out.append(f'choices {act.choices} lack some of {study}')
    return out


def test_the_table_names_our_commands():
    for script, (cmd, _, _) in COMMANDS.items():
        assert STUDY['commands'][script] == cmd.__name__.replace('_', '-')


@pytest.mark.parametrize('script', list(COMMANDS))
def test_every_study_flag_exists_with_its_default_or_a_listed_deviation(script):
    cmd, aliases, listed = COMMANDS[script]
    parser, problems = parser_of(inspect.unwrap(cmd)), []   # the parser the command itself builds
    for flag, spec in STUDY['flags'][script].items():
        act = our_action(parser, flag, aliases)
        if act is None: problems.append(f'{flag}: missing'); continue
        diff = differences(spec, act)
        names = {flag, *(o for o in act.option_strings if o.startswith('--'))}
        if diff and not any(s.split()[0] in names for s in listed): problems.append(f'{flag}: {"; ".join(diff)}, and no deviation row')
    assert not problems, f'{script} -> {STUDY["commands"][script]}:\n' + '\n'.join(problems)


@pytest.mark.parametrize('script', list(COMMANDS))
def test_help_names_each_deviation(script):
    cmd, _, listed = COMMANDS[script]
    h = cli.command_help(cmd)
    assert listed and 'Differences from the study:' in h
    assert [s for s in listed if f'  {s}: study ' not in h] == []   # each row starts a line of the epilogue


def test_aliases_reach_the_command(tmp_path):
    "`--folder` is test3dnnunet.py's name of the prediction folder: it arrives as --pred_dir"
    import sys
    argv, sys.argv = sys.argv, ['segthor-test3dnnunet', '--folder', str(tmp_path/'nowhere'), '--gt_dir', str(tmp_path), '--out', str(tmp_path/'r.csv')]
    try:
        with pytest.raises(SystemExit) as e: cli.segthor_test3dnnunet()
    finally: sys.argv = argv
    assert 'nowhere' in str(e.value)
